//! `cargo xtask asm-report`: instructions per multiply-accumulate in the hot loops of the
//! NEON kernels, read from `aarch64-linux-gnu-objdump -d` of the release build, next to the
//! minimum the instruction set allows.

use std::process::Command;

use anyhow::{Context, bail};

use crate::build::{artifact_dir, cargo_for};
use crate::toolchain::{Toolchain, run as run_command};

pub(crate) const LONG_HELP: &str = "\
Build lastmile-backend-neon for aarch64-unknown-linux-gnu (release), disassemble it with the
toolchain's objdump, find the innermost loop of each micro-kernel (the backward branch whose
body holds the multiply-accumulate instructions) and print, per tier and weight width:
instructions in the loop, int8 MACs per iteration (smull/smlal: 8, sdot: 16, smmla: 32,
smlal .4s: 4), instructions per MAC, and the instruction set's minimum (MAC instructions only).

With --write, the table replaces the block between `<!-- asm-report:begin -->` and
`<!-- asm-report:end -->` in docs/targets.md.";

const TRIPLE: &str = "aarch64-unknown-linux-gnu";

/// One row of the report.
struct Kernel {
    tier: &'static str,
    scheme: &'static str,
    /// Suffix of the demangled function name.
    function: &'static str,
    /// int8 MACs per weight MAC (16w8a runs two byte planes).
    planes: u32,
    /// The chain the minimum counts, and its instructions per int8 MAC.
    minimum: (&'static str, f64),
}

const KERNELS: [Kernel; 8] = [
    Kernel {
        tier: "neon",
        scheme: "8w8a",
        function: "arch::neon::tile_4x4_paired",
        planes: 1,
        minimum: ("smull + smlal2 + sadalp per 16 MACs", 3.0 / 16.0),
    },
    Kernel {
        tier: "neon",
        scheme: "16w8a",
        function: "arch::neon::tile_4x4",
        planes: 2,
        minimum: ("smull + smull2 + 2 sadalp per 16 MACs", 4.0 / 16.0),
    },
    Kernel {
        tier: "dotprod",
        scheme: "8w8a",
        function: "arch::dotprod::tile_4x4",
        planes: 1,
        minimum: ("1 sdot per 16 MACs", 1.0 / 16.0),
    },
    Kernel {
        tier: "dotprod",
        scheme: "16w8a",
        function: "arch::dotprod::tile_4x4",
        planes: 2,
        minimum: ("1 sdot per 16 MACs", 1.0 / 16.0),
    },
    Kernel {
        tier: "i8mm",
        scheme: "8w8a",
        function: "arch::i8mm::tile_8x8",
        planes: 1,
        minimum: ("1 smmla per 32 MACs", 1.0 / 32.0),
    },
    Kernel {
        tier: "i8mm",
        scheme: "16w8a",
        function: "arch::i8mm::tile_8x8",
        planes: 2,
        minimum: ("1 smmla per 32 MACs", 1.0 / 32.0),
    },
    Kernel {
        tier: "all (depthwise)",
        scheme: "8w8a",
        function: "arch::neon::depthwise_w8",
        planes: 1,
        minimum: ("1 smlal/smlal2 (.4s) per 4 MACs", 1.0 / 4.0),
    },
    Kernel {
        tier: "all (depthwise)",
        scheme: "16w8a",
        function: "arch::neon::depthwise_w16",
        planes: 1,
        minimum: ("1 smlal/smlal2 (.4s) per 4 MACs", 1.0 / 4.0),
    },
];

#[derive(Debug, Clone)]
struct Insn {
    addr: u64,
    mnemonic: String,
    operands: String,
}

/// Functions of an objdump listing: (demangled name, instructions).
fn parse_functions(text: &str) -> Vec<(String, Vec<Insn>)> {
    let mut out: Vec<(String, Vec<Insn>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .filter(|(addr, _)| u64::from_str_radix(addr.trim(), 16).is_ok())
            .map(|(_, name)| name.to_string())
        {
            out.push((name, Vec::new()));
            continue;
        }
        let Some((addr, rest)) = line.trim_start().split_once(":\t") else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        let (mnemonic, operands) = rest.split_once('\t').unwrap_or((rest, ""));
        if let Some((_, insns)) = out.last_mut() {
            insns.push(Insn {
                addr,
                mnemonic: mnemonic.trim().to_string(),
                operands: operands.trim().to_string(),
            });
        }
    }
    out
}

/// int8 (or, for `.4s` widening ops, int16) MACs one instruction performs.
fn macs(i: &Insn) -> u32 {
    let m = i.mnemonic.as_str();
    let dest = i.operands.split(',').next().unwrap_or("");
    match m {
        "sdot" | "udot" | "usdot" | "sudot" => 16,
        "smmla" | "ummla" | "usmmla" => 32,
        "smull" | "smull2" | "smlal" | "smlal2" | "umull" | "umull2" | "umlal" | "umlal2" => {
            if dest.ends_with(".8h") {
                8
            } else if dest.ends_with(".4s") {
                4
            } else {
                2
            }
        }
        _ => 0,
    }
}

/// Target of a branch instruction, if it is one.
fn branch_target(i: &Insn) -> Option<u64> {
    let m = i.mnemonic.as_str();
    if !(m == "b" || m.starts_with("b.") || matches!(m, "cbz" | "cbnz" | "tbz" | "tbnz")) {
        return None;
    }
    let before = i.operands.split(" <").next()?;
    let tok = before.rsplit([',', ' ']).next()?.trim();
    u64::from_str_radix(tok, 16).ok()
}

/// A loop body: instructions, MACs, and how many of each mnemonic.
type HotLoop = (usize, u32, Vec<(String, usize)>);

/// The innermost hot loop: among backward branches, the body with the most MACs (the
/// smallest such body on a tie).
fn hot_loop(insns: &[Insn]) -> Option<HotLoop> {
    let mut best: Option<(usize, u32, usize, usize)> = None; // (len, macs, from, to)
    for (j, br) in insns.iter().enumerate() {
        let Some(t) = branch_target(br).filter(|&t| t <= br.addr) else {
            continue;
        };
        let Some(from) = insns.iter().position(|i| i.addr == t) else {
            continue;
        };
        let body = &insns[from..=j];
        let m: u32 = body.iter().map(macs).sum();
        if m == 0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((len, bm, _, _)) => m > bm || (m == bm && body.len() < len),
        };
        if better {
            best = Some((body.len(), m, from, j));
        }
    }
    let (len, m, from, to) = best?;
    let mut hist: Vec<(String, usize)> = Vec::new();
    for i in &insns[from..=to] {
        match hist.iter_mut().find(|(n, _)| *n == i.mnemonic) {
            Some((_, c)) => *c += 1,
            None => hist.push((i.mnemonic.clone(), 1)),
        }
    }
    Some((len, m, hist))
}

/// `cargo xtask asm-report [--write]`.
pub(crate) fn run(install: bool, write: bool) -> anyhow::Result<()> {
    let t = Toolchain::load(TRIPLE)?;
    crate::doctor::ensure(&t, install)?;
    let mut c = cargo_for(&t, "build", true);
    c.args(["-p", "lastmile-backend-neon"]);
    run_command(&mut c)?;
    let rlib = artifact_dir(&t, true).join("liblastmile_backend_neon.rlib");
    let objdump = t.objdump.as_deref().unwrap_or("aarch64-linux-gnu-objdump");
    let out = Command::new(objdump)
        .args(["-d", "--no-show-raw-insn", "-C"])
        .arg(&rlib)
        .output()
        .with_context(|| format!("could not run {objdump} (see `cargo xtask doctor`)"))?;
    if !out.status.success() {
        bail!(
            "{objdump} failed on {}: {}",
            rlib.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let functions = parse_functions(&String::from_utf8_lossy(&out.stdout));

    let mut table = String::new();
    table.push_str(
        "| tier | weights | kernel (hot loop) | instructions / iteration | int8 MACs / iteration \
         | instructions / int8 MAC | instructions / weight MAC | ISA minimum / weight MAC |\n\
         |---|---|---|---:|---:|---:|---:|---|\n",
    );
    let mut details = String::new();
    for k in &KERNELS {
        let Some((_, insns)) = functions.iter().find(|(name, _)| {
            name.ends_with(k.function) || name.contains(&format!("{}::h", k.function))
        }) else {
            bail!(
                "{} not found in the disassembly of {}",
                k.function,
                rlib.display()
            );
        };
        let Some((len, m, hist)) = hot_loop(insns) else {
            bail!("no MAC loop found in {}", k.function);
        };
        let per_int8 = len as f64 / m as f64;
        let per_weight = per_int8 * k.planes as f64;
        let min_weight = k.minimum.1 * k.planes as f64;
        table.push_str(&format!(
            "| {} | {} | `{}` | {len} | {m} | {per_int8:.3} | {per_weight:.3} | {min_weight:.3} ({}{}) |\n",
            k.tier,
            k.scheme,
            k.function.rsplit("::").next().unwrap_or(k.function),
            k.minimum.0,
            if k.planes == 2 { ", ×2 byte planes" } else { "" },
        ));
        if k.scheme == "8w8a" || k.tier == "neon" {
            let mix: Vec<String> = hist.iter().map(|(n, c)| format!("{c}×{n}")).collect();
            details.push_str(&format!("- `{}`: {}\n", k.function, mix.join(", ")));
        }
    }
    let report = format!(
        "{table}\nLoop bodies (static count from `{objdump} -d`, release build, rustc {}):\n\n{details}",
        rustc_version()
    );
    println!("\n{report}");
    if write {
        let path = crate::workspace_root().join("docs").join("targets.md");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let (begin, end) = ("<!-- asm-report:begin -->", "<!-- asm-report:end -->");
        let (Some(a), Some(b)) = (text.find(begin), text.find(end)) else {
            bail!("{} has no {begin} ... {end} block", path.display());
        };
        let new = format!("{}{begin}\n{report}{}", &text[..a], &text[b..]);
        std::fs::write(&path, new).with_context(|| format!("cannot write {}", path.display()))?;
        println!("updated {}", path.display());
    }
    Ok(())
}

fn rustc_version() -> String {
    Command::new("rustc")
        .arg("--version")
        .current_dir(crate::workspace_root())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
0000000000000000 <lastmile_backend_neon::arch::dotprod::tile_4x4>:
   0:\tlsr\tx8, x0, #4
  48:\tldp\tq24, q25, [x2]
  4c:\tsubs\tx8, x8, #0x1
  50:\tsdot\tv23.4s, v27.16b, v24.16b
  54:\tsmull\tv30.8h, v24.8b, v29.8b
  58:\tsmlal\tv1.4s, v2.4h, v3.4h
  5c:\tb.ne\t48 <lastmile_backend_neon::arch::dotprod::tile_4x4+0x48>  // b.any
  60:\tret
";

    #[test]
    fn finds_the_loop_and_counts_macs() {
        let f = parse_functions(LISTING);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].1.len(), 8);
        let (len, m, hist) = hot_loop(&f[0].1).unwrap();
        assert_eq!(len, 6); // 48..5c
        assert_eq!(m, 16 + 8 + 4);
        assert!(hist.contains(&("sdot".to_string(), 1)));
    }
}
