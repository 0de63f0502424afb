//! `cargo xtask bench`: run the criterion benches and summarize them as a markdown table.
//!
//! Results are read from criterion's JSON (`<target>/criterion/**/new/benchmark.json` and
//! the sibling `estimates.json`), never from its text output; only benchmarks written by
//! this run count (their files are newer than its start).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, bail};
use serde_json::Value;

pub(crate) const LONG_HELP: &str = "\
Run the criterion benches of `benches/` (forward throughput of every backend and every
x86 tier at ResNet-18 / MobileNet / linear shapes and on whole zoo models, plus the cost
of re-packing trainable weights), then write a markdown summary to
target/bench/summary.md and print it:

  * forward: one row per op/shape and scheme, one column per backend/tier, cells
    `GMAC/s (time per forward)`;
  * 16w8a / 8w8a time ratio per shape and tier;
  * re-pack cost of trainable weights in ns/weight per tier.
  * ONNX Runtime (QLinearConv / QLinearMatMul, `cargo xtask sdk onnxruntime`) and XNNPACK
    side by side with the x86 8w8a kernels on the same shapes, 1 thread and all threads,
    as time ratios (benches/benches/ort.rs; skipped when the engine is not installed).

Times are criterion's median estimate. Single-threaded unless LASTMILE_THREADS is set.

  --quick             criterion's quick mode (a few seconds per benchmark in total)
  --backend LIST      only these backends: comma-separated `name`, `name/tier` or `tier`
                      (e.g. `x86/avx2,cpu-ref`); sets LASTMILE_BENCH_BACKEND
  --filter REGEX      criterion's benchmark filter (e.g. `conv3x3_56`)";

/// Options of `cargo xtask bench`.
#[derive(Debug)]
pub(crate) struct Options {
    pub quick: bool,
    pub backend: Option<String>,
    pub filter: Option<String>,
}

/// One benchmark result.
#[derive(Clone, Debug)]
struct Result1 {
    group: String,
    function: String,
    value: String,
    /// Median time per iteration, nanoseconds.
    ns: f64,
    /// Criterion throughput elements per iteration (MACs, or weights for re-pack).
    elements: Option<u64>,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    // Filesystem timestamps may be coarser than the clock: allow a second of slack.
    let start = SystemTime::now() - std::time::Duration::from_secs(1);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).args([
        "bench",
        "-p",
        "lastmile-benches",
        "--bench",
        "forward",
        "--bench",
        "ort",
        "--",
    ]);
    if opts.quick {
        cmd.arg("--quick");
    }
    if let Some(f) = &opts.filter {
        cmd.arg(f);
    }
    if let Some(b) = &opts.backend {
        cmd.env("LASTMILE_BENCH_BACKEND", b);
    }
    eprintln!("$ {cmd:?}");
    let status = cmd.status().context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    let results = collect(&target.join("criterion"), start)?;
    if results.is_empty() {
        bail!(
            "no benchmark results newer than this run under {}",
            target.join("criterion").display()
        );
    }
    let md = render(&results, opts);
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let path = out_dir.join("summary.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    println!("{md}");
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Every `new/benchmark.json` under `dir` modified at or after `since`.
fn collect(dir: &Path, since: SystemTime) -> anyhow::Result<Vec<Result1>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.file_name().is_some_and(|n| n == "benchmark.json")
                && p.parent()
                    .and_then(|q| q.file_name())
                    .is_some_and(|n| n == "new")
            {
                let est = p.with_file_name("estimates.json");
                let fresh = std::fs::metadata(&est)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= since);
                if fresh {
                    out.push(read_one(&p, &est)?);
                }
            }
        }
    }
    Ok(out)
}

fn read_json(p: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

fn read_one(bench: &Path, est: &Path) -> anyhow::Result<Result1> {
    let b = read_json(bench)?;
    let e = read_json(est)?;
    let s = |v: &Value| v.as_str().map(str::to_string);
    let group = s(&b["group_id"]).with_context(|| format!("{}: no group_id", bench.display()))?;
    let (function, value) = match (s(&b["function_id"]), s(&b["value_str"])) {
        (Some(f), Some(v)) => (f, v),
        (None, Some(v)) => (v, String::new()),
        (Some(f), None) => (f, String::new()),
        (None, None) => bail!("{}: no function_id or value_str", bench.display()),
    };
    let ns = e["median"]["point_estimate"]
        .as_f64()
        .or_else(|| e["mean"]["point_estimate"].as_f64())
        .with_context(|| format!("{}: no median estimate", est.display()))?;
    let elements = b["throughput"]["Elements"].as_u64();
    Ok(Result1 {
        group,
        function,
        value,
        ns,
        elements,
    })
}

fn fmt_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Column order: x86 tiers by preference, other backends, the reference last.
fn column_key(group: &str) -> (u8, String) {
    let rank = match group {
        "x86/amx" => 0,
        "x86/avx512-vnni" => 1,
        "x86/avx-vnni" => 2,
        "x86/avx2" => 3,
        g if g.starts_with("x86/") => 4,
        g if g.starts_with("cpu-ref") => 9,
        _ => 5,
    };
    (rank, group.to_string())
}

/// Row order: single layers by kind, whole models last; 8w8a before 16w8a.
fn row_key(function: &str) -> (u8, String) {
    let rank = match function {
        f if f.starts_with("conv3x3") => 0,
        f if f.starts_with("conv") => 1,
        f if f.starts_with("dwconv") => 2,
        f if f.starts_with("linear") => 3,
        f if f.starts_with("model") => 4,
        _ => 5,
    };
    (rank, function.to_string())
}

fn scheme_rank(v: &str) -> u8 {
    match v {
        "8w8a" => 0,
        "16w8a" => 1,
        _ => 2,
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A forward-table row: (op/shape order key, scheme rank, scheme).
type RowKey = ((u8, String), u8, String);

fn render(results: &[Result1], opts: &Options) -> String {
    let (vs_ort, results): (Vec<&Result1>, Vec<&Result1>) =
        results.iter().partition(|r| r.group.starts_with("vs-ort/"));
    let (repack, forward): (Vec<&Result1>, Vec<&Result1>) = results
        .into_iter()
        .partition(|r| r.group.starts_with("repack/"));
    let mut md = String::new();
    let threads = std::env::var("LASTMILE_THREADS").unwrap_or_else(|_| "1".into());
    let _ = writeln!(md, "# lastmile benchmark summary\n");
    let _ = writeln!(
        md,
        "{} · {} · threads per forward: {threads} · criterion{} · median times{}\n",
        cpu_model(),
        std::env::consts::ARCH,
        if opts.quick { " --quick" } else { "" },
        opts.backend
            .as_deref()
            .map(|b| format!(" · backends: {b}"))
            .unwrap_or_default(),
    );

    if !forward.is_empty() {
        let cols: BTreeSet<(u8, String)> = forward.iter().map(|r| column_key(&r.group)).collect();
        let cols: Vec<String> = cols.into_iter().map(|(_, g)| g).collect();
        let mut rows: BTreeMap<RowKey, BTreeMap<String, &Result1>> = BTreeMap::new();
        for r in &forward {
            rows.entry((row_key(&r.function), scheme_rank(&r.value), r.value.clone()))
                .or_default()
                .insert(r.group.clone(), r);
        }
        let _ = writeln!(md, "## Forward throughput (GMAC/s, time per forward)\n");
        let _ = writeln!(md, "| op / shape | scheme | {} |", cols.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---:|".repeat(cols.len()));
        for (((_, f), _, v), by_col) in &rows {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| match by_col.get(c) {
                    Some(r) => match r.elements {
                        Some(e) => format!("{:.1} ({})", e as f64 / r.ns, fmt_time(r.ns)),
                        None => fmt_time(r.ns),
                    },
                    None => "–".into(),
                })
                .collect();
            let _ = writeln!(md, "| {f} | {v} | {} |", cells.join(" | "));
        }
        let _ = writeln!(
            md,
            "\nGMAC/s = multiply-accumulates of conv/linear nodes per nanosecond (whole models \
             include their pools/adds in the time but not in the MAC count).\n"
        );

        // 16w8a / 8w8a ratio.
        let mut ratio_rows: BTreeMap<(u8, String), BTreeMap<String, f64>> = BTreeMap::new();
        for (((rk, f), _, v), by_col) in &rows {
            if v != "16w8a" {
                continue;
            }
            let Some(eight) = rows.get(&((*rk, f.clone()), 0, "8w8a".to_string())) else {
                continue;
            };
            for (c, r16) in by_col {
                if let Some(r8) = eight.get(c) {
                    ratio_rows
                        .entry((*rk, f.clone()))
                        .or_default()
                        .insert(c.clone(), r16.ns / r8.ns);
                }
            }
        }
        if !ratio_rows.is_empty() {
            let _ = writeln!(md, "## 16w8a / 8w8a time ratio (target ≤ 2.2)\n");
            let _ = writeln!(md, "| op / shape | {} |", cols.join(" | "));
            let _ = writeln!(md, "|---|{}", "---:|".repeat(cols.len()));
            for ((_, f), by_col) in &ratio_rows {
                let cells: Vec<String> = cols
                    .iter()
                    .map(|c| by_col.get(c).map_or("–".into(), |x| format!("{x:.2}")))
                    .collect();
                let _ = writeln!(md, "| {f} | {} |", cells.join(" | "));
            }
            let _ = writeln!(md);
        }
    }

    render_vs_ort(&mut md, &vs_ort);

    if !repack.is_empty() {
        let cols: BTreeSet<(u8, String)> = repack
            .iter()
            .map(|r| column_key(&r.group.replacen("repack/", "x86/", 1)))
            .collect();
        let cols: Vec<String> = cols
            .into_iter()
            .map(|(_, g)| g.replacen("x86/", "repack/", 1))
            .collect();
        let mut rows: BTreeMap<(String, u8, String), BTreeMap<String, &Result1>> = BTreeMap::new();
        for r in &repack {
            rows.entry((r.function.clone(), scheme_rank(&r.value), r.value.clone()))
                .or_default()
                .insert(r.group.clone(), r);
        }
        let _ = writeln!(
            md,
            "## Re-pack of trainable weights (ns/weight, time per tensor)\n"
        );
        let names: Vec<&str> = cols
            .iter()
            .map(|c| c.trim_start_matches("repack/"))
            .collect();
        let _ = writeln!(md, "| tensor | scheme | {} |", names.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---:|".repeat(cols.len()));
        for ((f, _, v), by_col) in &rows {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| match by_col.get(c) {
                    Some(r) => match r.elements {
                        Some(e) if e > 0 => {
                            format!("{:.2} ({})", r.ns / e as f64, fmt_time(r.ns))
                        }
                        _ => fmt_time(r.ns),
                    },
                    None => "–".into(),
                })
                .collect();
            let _ = writeln!(md, "| {f} | {v} | {} |", cells.join(" | "));
        }
    }
    md
}

/// Results of one shape by contender (`x86`, `ort`, ...).
type ByContender<'a> = BTreeMap<String, &'a Result1>;

/// The ONNX Runtime comparison (`benches/benches/ort.rs`): per thread count and shape, the
/// time of each contender and the ratio ORT time / x86 time (> 1: ours is faster).
fn render_vs_ort(md: &mut String, results: &[&Result1]) {
    if results.is_empty() {
        return;
    }
    // (threads, shape) -> contender -> result
    let mut rows: BTreeMap<(usize, (u8, String)), ByContender<'_>> = BTreeMap::new();
    for r in results {
        let t = r
            .group
            .trim_start_matches("vs-ort/")
            .trim_end_matches('t')
            .parse()
            .unwrap_or(0);
        rows.entry((t, row_key(&r.function)))
            .or_default()
            .insert(r.value.clone(), r);
    }
    let cell = |r: Option<&&Result1>| match r {
        Some(r) => match r.elements {
            Some(e) => format!("{:.1} ({})", e as f64 / r.ns, fmt_time(r.ns)),
            None => fmt_time(r.ns),
        },
        None => "–".into(),
    };
    let ratio = |a: Option<&&Result1>, b: Option<&&Result1>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a.ns / b.ns),
        _ => "–".into(),
    };
    let _ = writeln!(
        md,
        "## ONNX Runtime vs x86 8w8a (GMAC/s (time); ratio = ORT time / x86 time, > 1 = x86 faster)\n"
    );
    let _ = writeln!(
        md,
        "| threads | op / shape | x86 | ORT QLinearConv | ORT / x86 | x86 AVX-512 VNNI | ORT / x86 VNNI | ORT QLinearMatMul | QLinearMatMul / x86 | x86 trainable | ORT trainable | ORT / x86 trainable | XNNPACK | XNNPACK / x86 | XNNPACK trainable | XNNPACK / x86 trainable |"
    );
    let _ = writeln!(
        md,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for ((t, (_, shape)), c) in &rows {
        let _ = writeln!(
            md,
            "| {t} | {shape} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(c.get("x86")),
            cell(c.get("ort")),
            ratio(c.get("ort"), c.get("x86")),
            cell(c.get("x86-vnni")),
            ratio(c.get("ort"), c.get("x86-vnni")),
            cell(c.get("ort-qlinearmatmul")),
            ratio(c.get("ort-qlinearmatmul"), c.get("x86")),
            cell(c.get("x86-trainable")),
            cell(c.get("ort-trainable")),
            ratio(c.get("ort-trainable"), c.get("x86-trainable")),
            cell(c.get("xnnpack")),
            ratio(c.get("xnnpack"), c.get("x86")),
            cell(c.get("xnnpack-trainable")),
            ratio(c.get("xnnpack-trainable"), c.get("x86-trainable")),
        );
    }
    let _ = writeln!(
        md,
        "\nORT = ONNX Runtime's CPU EP running the model `lastmile-backend-onnxruntime` emits \
         (linear as com.microsoft QGemm with bias); x86 = the best tier (AMX where present); \
         x86 AVX-512 VNNI = that tier, measured when the best is AMX (ORT's own kernels here \
         are AVX-512 VNNI); QLinearMatMul = a bare node without bias, \
         per-tensor scales, u8 activations like the emitted model. Trainable: weights change \
         every forward (x86 re-packs, ORT takes them as session inputs, XNNPACK re-creates \
         the operator). XNNPACK runs single-threaded (no pthreadpool).\n"
    );
}
