//! Checks the placed tables with the ACPICA tools (Debian `acpica-tools`):
//! `iasl -d` must disassemble every table cleanly, the disassembly must
//! recompile without errors or warnings, and `acpiexec` must evaluate the
//! DSDT's objects. Each test prints why and returns early when the tool is
//! missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A scratch directory removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tessera-firmware-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True if `tool` can be run; otherwise prints why the test is skipped.
fn have(tool: &str) -> bool {
    match Command::new(tool).arg("-v").output() {
        Ok(_) => true,
        Err(e) => {
            println!("skipping: cannot run `{tool}` ({e}); install acpica-tools");
            false
        }
    }
}

/// Runs `tool args` in `dir`; returns success and the combined output.
fn run(dir: &Path, tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The number before `label` in iasl's summary line, e.g. `0 Errors`.
fn summary_count(output: &str, label: &str) -> Option<u32> {
    let line = output.lines().find(|l| l.starts_with("Compilation "))?;
    line.split(',').find_map(|part| {
        let words: Vec<&str> = part.split_whitespace().collect();
        match words.as_slice() {
            [.., n, l] if *l == label => n.parse().ok(),
            _ => None,
        }
    })
}

/// Compiles `source` (ASL or data-table source) with iasl into `out.aml`,
/// requiring 0 errors and 0 warnings, and returns the binary.
fn compile(dir: &ScratchDir, source: &str, out: &str) -> Vec<u8> {
    let (ok, text) = run(&dir.0, "iasl", &["-p", out, source]);
    assert!(ok, "iasl {source} failed:\n{text}");
    assert_eq!(summary_count(&text, "Errors"), Some(0), "{source}:\n{text}");
    assert_eq!(
        summary_count(&text, "Warnings"),
        Some(0),
        "{source}:\n{text}"
    );
    std::fs::read(dir.path(&format!("{out}.aml"))).expect("compiled table")
}

fn placed_for_tools() -> PlacedTables {
    let cfg = AcpiConfig {
        cpu_count: 4,
        serial_ports: vec![SerialPort::COM1, SerialPort { io: 0x2f8, irq: 3 }],
        cmos_rtc: true,
        ..AcpiConfig::default()
    };
    build(&cfg).unwrap().place_at(0xe0000, 0x10000).unwrap()
}

/// Writes every table but the RSDP as `<SIG>.dat`; returns the signatures.
fn write_tables(dir: &ScratchDir, p: &PlacedTables) -> Vec<String> {
    let mut names = Vec::new();
    for (i, t) in p.tables.iter().enumerate() {
        if &t.name == b"RSDP" {
            continue;
        }
        let name = tables::sig_str(&t.name);
        std::fs::write(dir.path(&format!("{name}.dat")), p.table_bytes(i).unwrap()).unwrap();
        names.push(name);
    }
    names
}

/// `iasl -d NAME.dat` in `dir`: must succeed without errors or warnings,
/// and the disassembly must show no bad checksum or invalid field.
/// Returns the disassembly.
fn disassemble_clean(dir: &ScratchDir, name: &str) -> String {
    let (ok, text) = run(&dir.0, "iasl", &["-d", &format!("{name}.dat")]);
    assert!(ok, "iasl -d {name}.dat failed:\n{text}");
    for bad in ["Error", "Warning", "not contain a valid"] {
        assert!(!text.contains(bad), "iasl -d {name}.dat:\n{text}");
    }
    let dsl = std::fs::read_to_string(dir.path(&format!("{name}.dsl"))).unwrap();
    for bad in ["Incorrect", "Invalid", "****"] {
        assert!(!dsl.contains(bad), "{name}.dsl contains {bad}:\n{dsl}");
    }
    dsl
}

#[test]
fn iasl_disassembles_and_recompiles_every_table() {
    if !have("iasl") {
        return;
    }
    let dir = ScratchDir::new("iasl");
    let p = placed_for_tools();
    let names = write_tables(&dir, &p);
    assert_eq!(names, ["FACP", "FACS", "DSDT", "APIC", "XSDT"]);

    for name in &names {
        let dsl = disassemble_clean(&dir, name);

        let original = p.find(&name.as_bytes().try_into().unwrap()).unwrap();
        let recompiled = compile(&dir, &format!("{name}.dsl"), &format!("re-{name}"));
        if name == "DSDT" {
            // iasl optimizes name paths, so compare meaning, not bytes.
            for want in [
                "DefinitionBlock (\"\", \"DSDT\", 2, \"TESSRA\", \"TESSERA \", 0x00000001)",
                "Name (\\_S5, Package (0x04)",
                "Device (COM1)",
                "Device (COM2)",
                "EisaId (\"PNP0501\")",
                "0x02F8,             // Range Minimum",
                "IRQNoFlags ()\n                    {3}",
                "Device (RTC)",
                "EisaId (\"PNP0B00\")",
                "0x0070,             // Range Minimum",
                "0x02,               // Length",
                "IRQNoFlags ()\n                    {8}",
            ] {
                assert!(dsl.contains(want), "DSDT.dsl lacks {want:?}:\n{dsl}");
            }
        } else {
            // Data tables round-trip exactly, except that iasl writes its own
            // creator id/revision (bytes 28..36) and hence checksum (byte 9).
            assert_eq!(recompiled.len(), original.len(), "{name}");
            let skip = |i: usize| name != "FACS" && (i == 9 || (28..36).contains(&i));
            for (i, (a, b)) in original.iter().zip(&recompiled).enumerate() {
                assert!(
                    skip(i) || a == b,
                    "{name} byte {i}: ours {a:#x}, iasl {b:#x}"
                );
            }
        }
    }
}

#[test]
fn iasl_compiles_the_same_rsdp() {
    // iasl cannot load a bare RSDP binary, but its data-table compiler
    // builds one and computes both checksums: it must match ours exactly.
    if !have("iasl") {
        return;
    }
    let dir = ScratchDir::new("rsdp");
    let p = placed_for_tools();
    let rsdp = p.find(b"RSDP").unwrap();
    let xsdt = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
    let source = format!(
        "[0008] Signature : \"RSD PTR \"\n\
         [0001] Checksum : 00\n\
         [0006] Oem ID : \"TESSRA\"\n\
         [0001] Revision : 02\n\
         [0004] RSDT Address : 00000000\n\
         [0004] Length : 00000024\n\
         [0008] XSDT Address : {xsdt:016X}\n\
         [0001] Extended Checksum : 00\n\
         [0003] Reserved : 000000\n"
    );
    std::fs::write(dir.path("rsdp.asl"), source).unwrap();
    assert_eq!(compile(&dir, "rsdp.asl", "re-rsdp"), rsdp);
    assert_eq!(&p.find(b"XSDT").unwrap()[..4], b"XSDT");
    assert_eq!(p.tables[5].addr, xsdt);
}

#[test]
fn acpiexec_evaluates_the_dsdt() {
    if !have("acpiexec") {
        return;
    }
    let dir = ScratchDir::new("acpiexec");
    let p = placed_for_tools();
    write_tables(&dir, &p);
    let (ok, text) = run(
        &dir.0,
        "acpiexec",
        &[
            "-b",
            "evaluate \\_S5; evaluate \\_SB.COM1._CRS; evaluate \\_SB.COM2._STA; \
             evaluate \\_SB.COM2._UID; evaluate \\_SB.RTC._HID; evaluate \\_SB.RTC._CRS",
            "DSDT.dat",
            "FACP.dat",
            "FACS.dat",
            "APIC.dat",
        ],
    );
    assert!(ok, "acpiexec failed:\n{text}");
    // acpiexec's built-in hardware self-tests also poke PM2 and a GPE1 block,
    // which this platform does not have ("Unexpected AE_BAD_ADDRESS ..."
    // lines); real problems with our tables show up as ACPI errors.
    for bad in ["ACPI Error", "ACPI Warning", "ACPI Exception", "Could not"] {
        assert!(!text.contains(bad), "acpiexec:\n{text}");
    }
    for want in [
        "FACP 0x",
        "(v06 TESSRA TESSERA  00000001",
        "[Package] Contains 4 Elements:",
        // IO (Decode16, 0x3f8, 0x3f8, 1, 8), IRQNoFlags {4}, EndTag.
        "47 01 F8 03 F8 03 01 08 22 10 00 79 00",
        "[Integer] = 000000000000000F",
        "[Integer] = 0000000000000002",
        // EISAID("PNP0B00").
        "[Integer] = 00000000000BD041",
        // IO (Decode16, 0x70, 0x70, 1, 2), IRQNoFlags {8}, EndTag.
        "47 01 70 00 70 00 01 02 22 00 01 79 00",
    ] {
        assert!(
            text.contains(want),
            "acpiexec output lacks {want:?}:\n{text}"
        );
    }
}

#[test]
fn summary_count_parses_iasl_output() {
    let text = "ASL Input: x\nCompilation successful. 0 Errors, 3 Warnings, 1 Remarks\n";
    assert_eq!(summary_count(text, "Errors"), Some(0));
    assert_eq!(summary_count(text, "Warnings"), Some(3));
    assert_eq!(summary_count(text, "Remarks"), Some(1));
    assert_eq!(
        summary_count("Compilation failed. 2 Errors", "Errors"),
        Some(2)
    );
    assert_eq!(summary_count("nothing", "Errors"), None);
}

fn placed_q35_for_tools() -> PlacedTables {
    build(&super::tests::q35(4))
        .unwrap()
        .place_at(0xe0000, 0x10000)
        .unwrap()
}

/// Recompiles the disassembled Q35 DSDT. iasl warns (3073) that PCI0 has
/// both `_HID` and `_ADR`; QEMU's q35 DSDT has both too, and that is the
/// only warning allowed.
fn compile_q35_dsdt(dir: &ScratchDir) {
    let (ok, text) = run(&dir.0, "iasl", &["-p", "re-DSDT", "DSDT.dsl"]);
    assert!(ok, "iasl DSDT.dsl failed:\n{text}");
    assert_eq!(summary_count(&text, "Errors"), Some(0), "{text}");
    let warnings = summary_count(&text, "Warnings");
    if warnings != Some(0) {
        assert_eq!(warnings, Some(1), "{text}");
        assert!(
            text.contains("Device (PCI0)") && text.contains("Warning  3073"),
            "unexpected warning:\n{text}"
        );
    }
    assert!(dir.path("re-DSDT.aml").exists());
}

#[test]
fn iasl_disassembles_and_recompiles_the_q35_tables() {
    if !have("iasl") {
        return;
    }
    let dir = ScratchDir::new("iasl-q35");
    let p = placed_q35_for_tools();
    let names = write_tables(&dir, &p);
    assert_eq!(names, ["FACP", "FACS", "DSDT", "APIC", "MCFG", "XSDT"]);

    for name in &names {
        let dsl = disassemble_clean(&dir, name);
        if name == "DSDT" {
            compile_q35_dsdt(&dir);
            for want in [
                "Name (\\_S5, Package (0x04)",
                "Scope (\\_SB)",
                "Device (PCI0)",
                "Name (_HID, EisaId (\"PNP0A08\")",
                "Name (_CID, EisaId (\"PNP0A03\")",
                "Name (_ADR, Zero)",
                "Name (_UID, Zero)",
                "Name (_SEG, Zero)",
                "Name (_BBN, Zero)",
                "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,",
                "0x00FF,             // Range Maximum",
                "0x0CF7,             // Range Maximum",
                "0x0D00,             // Range Minimum",
                "0x000A0000,         // Range Minimum",
                "0xC0000000,         // Range Minimum",
                "0xFBFFFFFF,         // Range Maximum",
                "QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,",
                "0x0000000FFFFFFFFF, // Range Maximum",
                "Name (_PRT, Package (0x80)",
                "Method (_OSC, 4, NotSerialized)",
                "ToUUID (\"33db4d5b-1ff7-401c-9657-7441c03dd766\")",
                "Device (DRAC)",
                "EisaId (\"PNP0C01\")",
                "0xB0000000,         // Range Minimum",
                "Device (LPC)",
                "Name (_ADR, 0x001F0000)",
                "Device (COM1)",
                "Device (COM2)",
                "Device (RTC)",
                "Device (PS2K)",
                "EisaId (\"PNP0303\")",
            ] {
                assert!(dsl.contains(want), "DSDT.dsl lacks {want:?}:\n{dsl}");
            }
            // The ISA devices live only under the LPC bridge.
            let lpc = dsl.find("Device (LPC)").unwrap();
            for dev in ["Device (COM1)", "Device (RTC)", "Device (PS2K)"] {
                assert_eq!(dsl.matches(dev).count(), 1, "{dev}");
                assert!(dsl.find(dev).unwrap() > lpc, "{dev} outside LPC");
            }
        } else {
            let original = p.find(&name.as_bytes().try_into().unwrap()).unwrap();
            let recompiled = compile(&dir, &format!("{name}.dsl"), &format!("re-{name}"));
            assert_eq!(recompiled.len(), original.len(), "{name}");
            let skip = |i: usize| name != "FACS" && (i == 9 || (28..36).contains(&i));
            for (i, (a, b)) in original.iter().zip(&recompiled).enumerate() {
                assert!(
                    skip(i) || a == b,
                    "{name} byte {i}: ours {a:#x}, iasl {b:#x}"
                );
            }
        }
    }
    let mcfg = std::fs::read_to_string(dir.path("MCFG.dsl")).unwrap();
    for want in [
        "Base Address : 00000000B0000000",
        "Segment Group Number : 0000",
        "Start Bus Number : 00",
        "End Bus Number : FF",
    ] {
        assert!(mcfg.contains(want), "MCFG.dsl lacks {want:?}:\n{mcfg}");
    }
    let xsdt = std::fs::read_to_string(dir.path("XSDT.dsl")).unwrap();
    let mcfg_addr = p.tables.iter().find(|t| &t.name == b"MCFG").unwrap().addr;
    assert!(
        xsdt.contains(&format!("ACPI Table Address   2 : {mcfg_addr:016X}")),
        "{xsdt}"
    );
}

/// The section of acpiexec's output for `evaluate path`.
fn evaluation<'a>(text: &'a str, path: &str) -> &'a str {
    let start = text
        .find(&format!("Evaluating {path}\n"))
        .unwrap_or_else(|| panic!("no evaluation of {path}:\n{text}"));
    let rest = &text[start + 1..];
    let end = rest.find("\nEvaluating ").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

/// The bytes of the buffer in an evaluation section (acpiexec hex dump:
/// `OOOO: HH HH ... // text`).
fn buffer_bytes(section: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in section.lines() {
        let Some(colon) = line.find(": ") else {
            continue;
        };
        let offset = line[..colon].rsplit(' ').next().unwrap_or("");
        if offset.len() != 4 || !offset.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let data = line[colon + 2..].split("//").next().unwrap();
        bytes.extend(
            data.split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap()),
        );
    }
    bytes
}

/// The `[Integer] = ...` values in an evaluation section, in order.
fn integers(section: &str) -> Vec<u64> {
    section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[Integer] = "))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn acpiexec_evaluates_the_q35_dsdt() {
    if !have("acpiexec") {
        return;
    }
    let dir = ScratchDir::new("acpiexec-q35");
    let p = placed_q35_for_tools();
    write_tables(&dir, &p);
    let uuid = "(5b 4d db 33 f7 1f 1c 40 96 57 74 41 c0 3d d7 66)";
    let other = "(5b 4d db 33 f7 1f 1c 40 96 57 74 41 c0 3d d7 67)";
    let caps = "(00 00 00 00 1f 00 00 00 ff 00 00 00)";
    let commands = format!(
        "evaluate \\_SB.PCI0._CRS; evaluate \\_SB.PCI0._PRT; \
         evaluate \\_SB.PCI0.LPC.COM1._CRS; evaluate \\_SB.PCI0.LPC.RTC._CRS; \
         evaluate \\_SB.PCI0.LPC.PS2K._CRS; evaluate \\_SB.PCI0.DRAC._CRS; \
         evaluate \\_SB.PCI0.LPC._ADR; evaluate \\_SB.PCI0._HID; \
         evaluate \\_SB.PCI0._OSC {uuid} 1 3 {caps}; \
         evaluate \\_SB.PCI0._OSC {other} 1 3 {caps}"
    );
    let (ok, text) = run(
        &dir.0,
        "acpiexec",
        &[
            "-b", &commands, "DSDT.dat", "FACP.dat", "FACS.dat", "APIC.dat", "MCFG.dat",
        ],
    );
    assert!(ok, "acpiexec failed:\n{text}");
    for bad in ["ACPI Error", "ACPI Warning", "ACPI Exception", "Could not"] {
        assert!(!text.contains(bad), "acpiexec:\n{text}");
    }
    assert!(text.contains("MCFG 0x"), "{text}");

    // _CRS: every window, as a resource template.
    let crs = buffer_bytes(evaluation(&text, "\\_SB.PCI0._CRS"));
    assert_eq!(&crs[crs.len() - 2..], &[0x79, 0x00], "EndTag");
    #[rustfmt::skip]
    let descriptors: [&[u8]; 6] = [
        // WordBusNumber 0..=0xff.
        &[0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0, 0, 0xff, 0, 0, 0, 0x00, 0x01],
        // IO (Decode16, 0xcf8, 0xcf8, 1, 8).
        &[0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08],
        // WordIO 0x0000..=0x0cf7 and 0x0d00..=0xffff.
        &[0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0, 0, 0, 0, 0xf7, 0x0c, 0, 0, 0xf8, 0x0c],
        &[0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0, 0, 0x00, 0x0d, 0xff, 0xff, 0, 0, 0x00, 0xf3],
        // DWordMemory 0xa0000..=0xbffff, cacheable.
        &[0x87, 0x17, 0x00, 0x00, 0x0c, 0x03, 0, 0, 0, 0, 0x00, 0x00, 0x0a, 0x00, 0xff, 0xff, 0x0b, 0x00],
        // DWordMemory 0xc0000000..=0xfbffffff, non-cacheable.
        &[0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0xc0, 0xff, 0xff, 0xff, 0xfb],
    ];
    for d in descriptors {
        assert!(contains(&crs, d), "_CRS lacks {d:02x?}: {crs:02x?}");
    }
    let mut qword = vec![0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x03];
    for v in [0u64, 0x8_0000_0000, 0xf_ffff_ffff, 0, 0x8_0000_0000] {
        qword.extend_from_slice(&v.to_le_bytes());
    }
    assert!(contains(&crs, &qword), "_CRS lacks the 64-bit window");

    // _PRT: 128 entries {slot << 16 | 0xffff, pin, 0, GSI}, each agreeing
    // with pci_intx_gsi, covering every slot and pin once.
    let prt_section = evaluation(&text, "\\_SB.PCI0._PRT");
    assert!(prt_section.contains("[Package] Contains 128 Elements:"));
    let prt = integers(prt_section);
    assert_eq!(prt.len(), 128 * 4);
    let mut seen = std::collections::HashSet::new();
    for e in prt.chunks(4) {
        assert_eq!(e[0] & 0xffff, 0xffff, "{e:x?}");
        let slot = u8::try_from(e[0] >> 16).unwrap();
        let pin = u8::try_from(e[1]).unwrap();
        assert!(slot < 32 && pin < 4, "{e:x?}");
        assert_eq!(e[2], 0, "source");
        assert_eq!(
            e[3],
            u64::from(pci_intx_gsi(slot, pin)),
            "slot {slot} pin {pin}"
        );
        assert!(seen.insert((slot, pin)));
    }
    assert_eq!(seen.len(), 128);
    assert_eq!(&prt[..4], &[0xffff, 0, 0, 20]);
    // Slot 31 (LPC, SMBus): INTA..INTD on PIRQ A..D = GSI 16..19.
    assert_eq!(
        &prt[124 * 4..],
        &[
            0x1f_ffff, 0, 0, 16, 0x1f_ffff, 1, 0, 17, 0x1f_ffff, 2, 0, 18, 0x1f_ffff, 3, 0, 19
        ]
    );

    // The ISA devices under LPC.
    let com1 = buffer_bytes(evaluation(&text, "\\_SB.PCI0.LPC.COM1._CRS"));
    assert_eq!(
        com1,
        [
            0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00
        ]
    );
    let rtc = buffer_bytes(evaluation(&text, "\\_SB.PCI0.LPC.RTC._CRS"));
    assert_eq!(
        rtc,
        [
            0x47, 0x01, 0x70, 0x00, 0x70, 0x00, 0x01, 0x02, 0x22, 0x00, 0x01, 0x79, 0x00
        ]
    );
    let kbd = buffer_bytes(evaluation(&text, "\\_SB.PCI0.LPC.PS2K._CRS"));
    #[rustfmt::skip]
    assert_eq!(kbd, [
        0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01,
        0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01,
        0x22, 0x02, 0x00, 0x79, 0x00,
    ]);
    let drac = buffer_bytes(evaluation(&text, "\\_SB.PCI0.DRAC._CRS"));
    assert!(
        contains(&drac, &[0x00, 0x00, 0x00, 0xb0, 0xff, 0xff, 0xff, 0xbf]),
        "{drac:02x?}"
    );
    assert_eq!(
        integers(evaluation(&text, "\\_SB.PCI0.LPC._ADR")),
        [0x001f_0000]
    );
    // EISAID("PNP0A08").
    assert_eq!(
        integers(evaluation(&text, "\\_SB.PCI0._HID")),
        [0x080a_d041]
    );

    // _OSC grants 0x1f of the 0xff asked for ("capabilities masked"), and
    // flags an unknown UUID.
    let (granted, unknown) = text
        .split_once("Evaluating \\_SB.PCI0._OSC\n")
        .unwrap()
        .1
        .split_once("Evaluating \\_SB.PCI0._OSC\n")
        .unwrap();
    assert_eq!(
        buffer_bytes(granted),
        [0x10, 0, 0, 0, 0x1f, 0, 0, 0, 0x1f, 0, 0, 0]
    );
    assert_eq!(
        buffer_bytes(unknown),
        [0x04, 0, 0, 0, 0x1f, 0, 0, 0, 0xff, 0, 0, 0]
    );
}
