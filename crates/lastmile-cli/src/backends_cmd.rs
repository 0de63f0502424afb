//! `lastmile backends`: what this build can run here, including the FFI plugins of
//! `LASTMILE_PLUGINS` and `--plugin PATH` (each with its version, capabilities and
//! exactness, or why it is unavailable and the command that fixes it).

use anyhow::Result;
use clap::Args;
use lastmile_core::backend::{Exactness, WeightUpdates};
use lastmile_core::graph::OpKind;
use serde::Serialize;

use crate::util::table;
use crate::{JsonFlag, Ui};

/// Arguments of `lastmile backends`.
#[derive(Debug, Args)]
pub struct BackendsArgs {
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Serialize)]
struct EntryJson {
    name: String,
    tier: String,
    description: String,
    available: bool,
    /// Why it cannot run here (when unavailable), with the command or step that fixes it.
    reason: Option<String>,
    capabilities: Option<lastmile_core::Capabilities>,
    /// The shared library of an FFI plugin (plugin C ABI), else null.
    plugin: Option<String>,
}

fn op_list(ops: &[OpKind]) -> String {
    if OpKind::ALL.iter().all(|o| ops.contains(o)) {
        return "all".into();
    }
    ops.iter()
        .map(|o| {
            serde_json::to_value(o)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{o:?}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn updates_str(u: &WeightUpdates) -> String {
    match u {
        WeightUpdates::ReadsHostMemory => "reads host memory".into(),
        WeightUpdates::UploadsEveryForward { cost } => format!("uploads every forward ({cost})"),
        WeightUpdates::Reprepare { cost } => format!("re-prepare ({cost})"),
    }
}

fn exact_str(e: &Exactness) -> String {
    match e {
        Exactness::BitExact => "bit-exact".into(),
        Exactness::WithinLsb { max_lsb, note } => format!("within {max_lsb} LSB ({note})"),
    }
}

/// `lastmile backends`.
pub fn run(_args: &BackendsArgs, ui: Ui) -> Result<()> {
    let entries: Vec<EntryJson> = lastmile_backends::all()
        .into_iter()
        .map(|e| {
            let capabilities = e.capabilities();
            EntryJson {
                plugin: e.plugin.as_ref().map(|p| p.display().to_string()),
                available: e.status.is_ok(),
                reason: e.status.err(),
                name: e.name,
                tier: e.tier,
                description: e.description,
                capabilities,
            }
        })
        .collect();
    if ui.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut r = vec![
                e.name.clone(),
                e.tier.clone(),
                match (e.available, &e.plugin) {
                    (true, _) => "available".into(),
                    // A plugin's reason (path, problem, fix) is long: printed below the table.
                    (false, Some(_)) => "unavailable (see below)".into(),
                    (false, None) => {
                        format!("unavailable: {}", e.reason.as_deref().unwrap_or("?"))
                    }
                },
            ];
            match &e.capabilities {
                Some(c) => r.extend([
                    op_list(&c.ops),
                    c.weight_bits
                        .iter()
                        .map(|b| b.scheme())
                        .collect::<Vec<_>>()
                        .join(","),
                    updates_str(&c.weight_updates),
                    exact_str(&c.exactness),
                    c.threads.to_string(),
                ]),
                None => r.extend(std::iter::repeat_n("-".to_string(), 5)),
            }
            r
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "name",
                "tier",
                "status",
                "ops",
                "weights",
                "weight updates",
                "exactness",
                "threads"
            ],
            &rows
        )
    );
    for e in &entries {
        println!("{}: {}", e.name, e.description);
    }
    for e in entries
        .iter()
        .filter(|e| !e.available && e.plugin.is_some())
    {
        println!(
            "\n{} is unavailable: {}",
            e.name,
            e.reason.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}
