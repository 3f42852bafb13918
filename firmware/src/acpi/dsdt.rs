//! DSDT: the AML namespace.
//!
//! It holds `\_S5_` (so Linux can power off through PM1a_CNT), one
//! `COMn` device per serial port and, when the machine has a CMOS RTC,
//! `RTC_` (so Linux's `rtc_cmos` binds through PNP).
//!
//! Without PCI the devices sit directly in `\_SB_`. With PCI (Q35) `\_SB_`
//! holds `PCI0` instead (see [`super::pci`]), and the devices sit under its
//! LPC bridge, `\_SB_.PCI0.LPC_`, as in QEMU's q35 DSDT.

use acpi_tables::aml::{EISAName, IO, Method, Name, Package, Path, ResourceTemplate, Return};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};

use super::{AcpiConfig, OEM_REVISION, OEM_TABLE_ID, S5_SLP_TYP, SerialPort};

/// DSDT revision 2: AML integers are 64 bits wide.
pub const DSDT_REVISION: u8 = 2;
/// Length of the standard ACPI table header.
const HEADER_LEN: u32 = 36;
/// Number of I/O ports a 16550 UART decodes.
pub const UART_IO_LEN: u8 = 8;
/// First I/O port of the MC146818 CMOS RTC.
pub const RTC_IO_BASE: u16 = 0x70;
/// Number of I/O ports of the RTC announced in `_CRS` (index and data).
pub const RTC_IO_LEN: u8 = 2;
/// ISA IRQ of the RTC.
pub const RTC_IRQ: u8 = 8;
/// `_STA` value: present, enabled, shown in UI, functioning.
const STA_PRESENT: u8 = 0x0f;

/// The legacy IRQ resource descriptor without flags: `IRQNoFlags () {irq}`
/// (small resource item 0x04, length 2). `acpi_tables` 0.2.1 only has the
/// Extended Interrupt descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqNoFlags {
    mask: u16,
}

impl IrqNoFlags {
    /// A descriptor for ISA IRQ `irq`, which must be below 16.
    pub fn new(irq: u8) -> Self {
        debug_assert!(irq < 16);
        Self {
            mask: 1u16 << (irq & 0xf),
        }
    }
}

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x22); // small item, type 4 (IRQ), length 2
        sink.word(self.mask);
    }
}

/// `Name (\_S5_, Package () {S5_SLP_TYP, S5_SLP_TYP, 0, 0})`.
pub fn s5_aml() -> Vec<u8> {
    let mut aml = Vec::new();
    Name::new(
        Path::new("\\_S5_"),
        &Package::new(vec![&S5_SLP_TYP, &S5_SLP_TYP, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut aml);
    aml
}

/// The AML name of serial port number `index` (0-based): `COM1`, `COM2`, …
/// `index` must be below 9.
pub fn serial_name(index: usize) -> String {
    format!("COM{}", index + 1)
}

/// `Device (COMn)` for serial port number `index` (0-based, below 9), a
/// 16550 UART: `_HID` PNP0501, `_UID` n (= index + 1), `_STA` 0x0F and
/// `_CRS` with its 8 I/O ports and ISA IRQ.
pub fn serial_device_aml(index: usize, port: &SerialPort) -> Vec<u8> {
    let uid = index as u64 + 1;
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0501"));
    let uid = Name::new(Path::new("_UID"), &uid);
    let sta_value = Return::new(&STA_PRESENT);
    let sta = Method::new(Path::new("_STA"), 0, false, vec![&sta_value]);
    let io = IO::new(port.io, port.io, 1, UART_IO_LEN);
    let irq = IrqNoFlags::new(port.irq);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&io, &irq]));
    let mut aml = Vec::new();
    acpi_tables::aml::Device::new(Path::new(&serial_name(index)), vec![&hid, &uid, &sta, &crs])
        .to_aml_bytes(&mut aml);
    aml
}

/// `Device (RTC)` for the MC146818 CMOS RTC, as in QEMU's q35 DSDT:
/// `_HID` PNP0B00 and `_CRS` with `IO (Decode16, 0x70, 0x70, 1, 2)` and
/// `IRQNoFlags () {8}`.
pub fn rtc_device_aml() -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0B00"));
    let io = IO::new(RTC_IO_BASE, RTC_IO_BASE, 1, RTC_IO_LEN);
    let irq = IrqNoFlags::new(RTC_IRQ);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&io, &irq]));
    let mut aml = Vec::new();
    acpi_tables::aml::Device::new(Path::new("RTC_"), vec![&hid, &crs]).to_aml_bytes(&mut aml);
    aml
}

/// The `\_SB_` scope with the devices described by `cfg`: without PCI the
/// serial ports, then the RTC if `cfg.cmos_rtc`; with PCI the host bridge
/// `PCI0`, which holds them under its LPC bridge.
pub fn system_bus_aml(cfg: &AcpiConfig) -> Vec<u8> {
    if let Some(pci) = &cfg.pci {
        let pci0 = super::pci::pci0_aml(cfg, pci);
        return acpi_tables::aml::Scope::raw(Path::new("\\_SB_"), pci0);
    }
    let mut children = Vec::new();
    for (index, port) in cfg.serial_ports.iter().enumerate() {
        children.extend_from_slice(&serial_device_aml(index, port));
    }
    if cfg.cmos_rtc {
        children.extend_from_slice(&rtc_device_aml());
    }
    acpi_tables::aml::Scope::raw(Path::new("\\_SB_"), children)
}

/// The AML body of the DSDT (everything after the header).
pub fn dsdt_body(cfg: &AcpiConfig) -> Vec<u8> {
    let mut aml = s5_aml();
    aml.extend_from_slice(&system_bus_aml(cfg));
    aml
}

/// Builds the DSDT. `cfg` must have been validated (serial IRQs below 16,
/// at most 9 serial ports, a valid `pci`). The checksum is left for the
/// back-ends.
pub fn build_dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut dsdt = Sdt::new(
        *b"DSDT",
        HEADER_LEN,
        DSDT_REVISION,
        cfg.oem_id,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(&dsdt_body(cfg));
    let mut bytes = dsdt.as_slice().to_vec();
    bytes[super::tables::SDT_CHECKSUM_OFFSET] = 0;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irq_no_flags_encoding() {
        let mut v = Vec::new();
        IrqNoFlags::new(4).to_aml_bytes(&mut v);
        assert_eq!(v, [0x22, 0x10, 0x00]);
        v.clear();
        IrqNoFlags::new(15).to_aml_bytes(&mut v);
        assert_eq!(v, [0x22, 0x00, 0x80]);
    }

    #[test]
    fn s5_package_bytes() {
        // NameOp "\_S5_" PackageOp PkgLength(6) NumElements(4) Zero Zero Zero Zero
        assert_eq!(
            s5_aml(),
            [
                0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn serial_device_contents() {
        let aml = serial_device_aml(1, &SerialPort { io: 0x2f8, irq: 3 });
        let find = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"COM2"));
        // _HID EISAID("PNP0501") = DWordConst 0x0105D041.
        assert!(find(&[
            b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x05, 0x01
        ]));
        // _UID 2.
        assert!(find(&[b'_', b'U', b'I', b'D', 0x0a, 2]));
        // IO (Decode16, 0x2f8, 0x2f8, 1, 8) then IRQNoFlags {3}, EndTag.
        assert!(find(&[
            0x47, 0x01, 0xf8, 0x02, 0xf8, 0x02, 0x01, 0x08, 0x22, 0x08, 0x00, 0x79, 0x00
        ]));
    }

    #[test]
    fn rtc_device_bytes() {
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[0x5b, 0x82, 0x25][..],              // DeviceOp, PkgLength 37
            b"RTC_",
            &[0x08], b"_HID", &[0x0c, 0x41, 0xd0, 0x0b, 0x00], // EISAID("PNP0B00")
            &[0x08], b"_CRS", &[0x11, 0x10, 0x0a, 0x0d], // Buffer (13)
            &[0x47, 0x01, 0x70, 0x00, 0x70, 0x00, 0x01, 0x02], // IO (Decode16, 0x70, 0x70, 1, 2)
            &[0x22, 0x00, 0x01],                  // IRQNoFlags () {8}
            &[0x79, 0x00],                        // EndTag
        ]
        .concat();
        assert_eq!(rtc_device_aml(), want);
    }

    #[test]
    fn rtc_only_with_cmos_rtc() {
        let mut cfg = AcpiConfig::default();
        assert!(!cfg.cmos_rtc, "the default stays without an RTC");
        let rtc = rtc_device_aml();
        let has_rtc = |b: &[u8]| b.windows(rtc.len()).any(|w| w == rtc.as_slice());
        let without = build_dsdt(&cfg);
        assert!(!has_rtc(&without));
        assert!(!without.windows(4).any(|w| w == b"RTC_"));
        cfg.cmos_rtc = true;
        let with = build_dsdt(&cfg);
        assert!(has_rtc(&with));
        // The RTC, plus one more PkgLength byte for \_SB_ past 63 bytes.
        assert_eq!(with.len(), without.len() + rtc.len() + 1);
        // Inside \_SB_, after the serial ports.
        let mut sb = Vec::new();
        for (i, port) in cfg.serial_ports.iter().enumerate() {
            sb.extend_from_slice(&serial_device_aml(i, port));
        }
        sb.extend_from_slice(&rtc);
        assert_eq!(
            system_bus_aml(&cfg),
            acpi_tables::aml::Scope::raw(Path::new("\\_SB_"), sb)
        );
    }

    #[test]
    fn dsdt_header_and_body() {
        let cfg = AcpiConfig {
            serial_ports: vec![
                SerialPort { io: 0x3f8, irq: 4 },
                SerialPort { io: 0x2f8, irq: 3 },
            ],
            ..AcpiConfig::default()
        };
        let b = build_dsdt(&cfg);
        assert_eq!(&b[0..4], b"DSDT");
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(b[8], DSDT_REVISION);
        assert_eq!(&b[36..], &dsdt_body(&cfg)[..]);
        let find = |needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"\\_SB_"));
        assert!(find(b"COM1") && find(b"COM2") && !find(b"COM3"));
    }
}
