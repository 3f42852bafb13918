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
        let (ok, text) = run(&dir.0, "iasl", &["-d", &format!("{name}.dat")]);
        assert!(ok, "iasl -d {name}.dat failed:\n{text}");
        for bad in ["Error", "Warning", "not contain a valid"] {
            assert!(!text.contains(bad), "iasl -d {name}.dat:\n{text}");
        }
        let dsl = std::fs::read_to_string(dir.path(&format!("{name}.dsl"))).unwrap();
        for bad in ["Incorrect", "Invalid", "****"] {
            assert!(!dsl.contains(bad), "{name}.dsl contains {bad}:\n{dsl}");
        }

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
