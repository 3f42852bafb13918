// SPDX-License-Identifier: Apache-2.0
//
// A tiny EFI application for the `ovmf-efi-app` boot test: tessera hands it
// to OVMF as `--kernel app.efi`, as a CI user hands over a firmware test.
// It prints through the firmware's console (ConOut: OVMF's serial terminal)
// and straight to the COM1 UART, echoes its load options (tessera's
// --cmdline), reads the firmware vendor, and ends through the debug-exit
// port with the status given as `exit=N` (decimal) in the options, written
// as one 32-bit `out` to port 0xf4 (kvm-unit-tests' convention).
// Built with gnu-efi by tests/testbed/lib/fetch.sh (build_efi_app).
#include <efi.h>
#include <efilib.h>

static void outb(UINT16 port, UINT8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static UINT8 inb(UINT16 port) { UINT8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static void outl(UINT16 port, UINT32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

static void uart_putc(char c) {
  for (int i = 0; i < 100000 && !(inb(0x3f8 + 5) & 0x20); i++) {
  }
  outb(0x3f8, (UINT8)c);
}

static void uart_puts(const char *s) {
  while (*s) uart_putc(*s++);
}

static void uart_put_ucs2(const CHAR16 *s, UINTN n) {
  for (UINTN i = 0; i < n && s[i]; i++) uart_putc(s[i] < 0x80 ? (char)s[i] : '?');
}

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st) {
  EFI_LOADED_IMAGE *li = NULL;
  const CHAR16 *opts = L"";
  UINTN nopts = 0;
  UINT32 code = 0;

  InitializeLib(image, st);
  Print(L"TESSERA-EFI-APP conout: hello from an EFI application\r\n");
  if (uefi_call_wrapper(BS->HandleProtocol, 3, image, &LoadedImageProtocol, (void **)&li) == EFI_SUCCESS &&
      li->LoadOptions != NULL) {
    opts = li->LoadOptions;
    nopts = li->LoadOptionsSize / sizeof(CHAR16);
  }
  uart_puts("\r\nTESSERA-EFI-APP uart: options [");
  uart_put_ucs2(opts, nopts);
  uart_puts("] vendor [");
  uart_put_ucs2(st->FirmwareVendor, 64);
  uart_puts("]\r\n");
  // exit=N anywhere in the options
  for (UINTN i = 0; i + 5 <= nopts; i++) {
    if (opts[i] == 'e' && opts[i + 1] == 'x' && opts[i + 2] == 'i' && opts[i + 3] == 't' && opts[i + 4] == '=') {
      for (UINTN j = i + 5; j < nopts && opts[j] >= '0' && opts[j] <= '9'; j++) code = code * 10 + (opts[j] - '0');
      break;
    }
  }
  uart_puts("TESSERA-EFI-APP uart: exiting through port 0xf4\r\n");
  outl(0xf4, code);
  // Only without a debug-exit device: back to the firmware.
  uart_puts("TESSERA-EFI-APP uart: still running after the debug-exit write\r\n");
  return EFI_SUCCESS;
}
