//! `mouthmap models`: the model repository (list, show, validate) and its
//! export to a Triton model repository.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use mouthmap_inferencer::model::{Description, Device, Model, ModelError};
use mouthmap_inferencer::repository::{MODEL_FILE, Version};

use mouthmap_feature_store::{Row, Value};
use mouthmap_inferencer::service::{ModelRouter, ROUTE_VIEW};

use super::infer::{DeviceArg, RepositoryArgs};
use super::{FeatureStoreArgs, duration};

pub const LONG_ABOUT: &str = "\
The model repository: every model version the inferencer can serve.

Its layout is Triton's: MODELS_DIR/NAME/VERSION/model.onnx, VERSION a
positive integer (the highest is the latest), an optional MODEL_CARD.md
beside each model.onnx. Everything a server needs besides the graph
(vocabulary, blank, normalisation, the model's own version, training data
hash, metrics) is in the ONNX file's metadata. `infer --model NAME[:VERSION]`
serves a version from it. See docs/models.md.

Examples:
  mouthmap models list
  mouthmap models show mouthmap-lipnet-grid-s1
  mouthmap models validate                      # every version; exit 1 if one is broken
  mouthmap models validate ./my-model.onnx
  mouthmap models export-triton /srv/triton mouthmap-lipnet-grid-s1:1
  mouthmap models route mouthmap-lipnet-grid-s1 --canary 2 --percent 10
  mouthmap models rollback mouthmap-lipnet-grid-s1";

#[derive(Args, Debug)]
pub struct ModelsArgs {
    #[command(flatten)]
    repository: RepositoryArgs,

    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Every model version in the repository, checked against the contract, and what does not follow the layout.
    List,
    /// One version: its file, inputs and outputs, vocabulary, normalisation, metadata and card.
    Show {
        /// NAME (its latest version) or NAME:VERSION.
        model: String,
    },
    /// The contract check `infer` runs at startup, with every broken part named; exit 1 if a model fails it.
    Validate {
        /// NAME, NAME:VERSION or the path of an .onnx file (default: every version in the repository).
        models: Vec<String>,
    },
    /// Which version reads a model's new streams: its live version, and a canary taking a share of them (no option: show the route).
    #[command(long_about = ROUTE_ABOUT)]
    Route {
        /// The model (its name in the repository).
        name: String,

        /// The version that reads the streams no canary takes.
        #[arg(long)]
        live: Option<u64>,

        /// A version that reads --percent of new streams.
        #[arg(long)]
        canary: Option<u64>,

        /// The canary's share of new streams, 0..100.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        percent: Option<u8>,

        /// A note kept with the route: why it changed.
        #[arg(long)]
        reason: Option<String>,

        #[command(flatten)]
        store: FeatureStoreArgs,
    },
    /// Send all new streams of a model back to its live version (the canary's share to 0), now.
    Rollback {
        /// The model (its name in the repository).
        name: String,

        /// A note kept with the route: why.
        #[arg(long)]
        reason: Option<String>,

        #[command(flatten)]
        store: FeatureStoreArgs,
    },
    /// Write a Triton model repository for one version: OUT/NAME/config.pbtxt and OUT/NAME/VERSION/model.onnx.
    #[command(name = "export-triton")]
    ExportTriton {
        /// The Triton model repository to write into (made if missing).
        out: PathBuf,

        /// NAME or NAME:VERSION (default: the reference model's latest version).
        model: Option<String>,

        /// Triton's max_batch_size: windows per model run at most (as `infer --max-batch`).
        #[arg(long, default_value_t = 16)]
        max_batch: usize,

        /// Triton's dynamic batching delay (as `infer --max-queue-delay`).
        #[arg(long, value_parser = duration, default_value = "0ms")]
        max_queue_delay: Duration,

        /// Where Triton runs the model (its instance_group kind).
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
}

const ROUTE_ABOUT: &str = "\
Which version of a model reads its new streams.

A route names a live version and, optionally, a canary that reads a share of
new streams (--percent). A stream's side is a hash of its id, so it is the
same on every replica and after a restart, and a stream keeps the version it
started with until its end. A stream's own `model` feature (`mouthmap
features set stream ID model=NAME:VERSION`) wins over the route. Routes live
in the feature store (Redis); `infer` reads them every 2 s, so a change takes
effect for the next streams without a restart.

Examples:
  mouthmap models route mouthmap-lipnet-grid-s1                                # show
  mouthmap models route mouthmap-lipnet-grid-s1 --live 1 --canary 2 --percent 10
  mouthmap models route mouthmap-lipnet-grid-s1 --percent 50 --reason \"canary looks good\"
  mouthmap models rollback mouthmap-lipnet-grid-s1 --reason \"WER up\"";

pub async fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Route {
            name,
            live,
            canary,
            percent,
            reason,
            store,
        } => {
            return route(
                &args.repository,
                &store,
                &name,
                live,
                canary,
                percent,
                reason,
            )
            .await;
        }
        Action::Rollback {
            name,
            reason,
            store,
        } => {
            let reason = format!("rollback: {}", reason.as_deref().unwrap_or("by hand"));
            return route(
                &args.repository,
                &store,
                &name,
                None,
                None,
                Some(0),
                Some(reason),
            )
            .await;
        }
        _ => {}
    }
    tokio::task::block_in_place(|| match args.action {
        Action::Route { .. } | Action::Rollback { .. } => unreachable!("handled above"),
        Action::List => list(&args.repository),
        Action::Show { model } => show(&args.repository, &model),
        Action::Validate { models } => validate(&args.repository, &models),
        Action::ExportTriton {
            out,
            model,
            max_batch,
            max_queue_delay,
            device,
        } => {
            let version = args.repository.open()?.resolve(
                model
                    .as_deref()
                    .unwrap_or(mouthmap_onnx::DEFAULT_MODEL_NAME),
            )?;
            let written = export_triton(&version, &out, max_batch, max_queue_delay, device)?;
            for p in written {
                println!("{}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    })
}

/// "1, 2, 3".
fn version_list(versions: &[Version]) -> String {
    versions
        .iter()
        .map(|x| x.version.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Shows a model's route, or changes what is given and shows the result.
async fn route(
    repo: &RepositoryArgs,
    store: &FeatureStoreArgs,
    name: &str,
    live: Option<u64>,
    canary: Option<u64>,
    percent: Option<u8>,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    let store = store.store()?;
    let versions = repo.open()?.versions(name)?;
    for v in [live, canary].into_iter().flatten() {
        anyhow::ensure!(
            versions.iter().any(|x| x.version == v),
            "{name} has no version {v} in the repository (versions: {})",
            version_list(&versions)
        );
    }
    let mut row = Row::new();
    if let Some(v) = live {
        row.insert("live".into(), Value::Int(v as i64));
    }
    if let Some(v) = canary {
        row.insert("canary".into(), Value::Int(v as i64));
    }
    if let Some(p) = percent {
        row.insert("percent".into(), Value::Int(i64::from(p)));
    }
    if !row.is_empty() {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        row.insert("changed_at_ms".into(), Value::Int(now_ms));
        row.insert(
            "reason".into(),
            Value::Str(reason.unwrap_or_else(|| "set by hand".into())),
        );
        store.write(ROUTE_VIEW, name, &row).await?;
    }
    let current = store.read(&[(ROUTE_VIEW, name)]).await?.remove(0);
    match current {
        None => println!(
            "{name}: no route; infer's --model version reads every stream (versions: {})",
            version_list(&versions)
        ),
        Some(r) => {
            let route = ModelRouter::route_of(&r);
            let live = route
                .live
                .map_or("the version infer was started with".to_string(), |v| {
                    format!("version {v}")
                });
            let canary = match route.canary {
                Some(c) if route.percent > 0 => {
                    format!(
                        "; canary version {c} reads {}% of new streams",
                        route.percent
                    )
                }
                Some(c) => format!("; canary version {c} at 0% (reads no new stream)"),
                None => String::new(),
            };
            println!("{name}: {live} reads new streams{canary}");
            if let Some(Value::Str(why)) = r.get("reason") {
                println!("  last change: {why}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads a model on the CPU with one thread: enough to check it.
fn check(path: &Path) -> Result<Model, ModelError> {
    Model::load(path, Device::Cpu, 1)
}

fn megabytes(path: &Path) -> String {
    std::fs::metadata(path)
        .map(|m| format!("{:.1} MB", m.len() as f64 / 1e6))
        .unwrap_or_else(|_| "?".into())
}

fn list(repo: &RepositoryArgs) -> anyhow::Result<ExitCode> {
    let repository = repo.open()?;
    let scan = repository.scan()?;
    println!("model repository {}", repository.root().display());
    if scan.versions.is_empty() {
        println!("  (no model: add one as NAME/VERSION/model.onnx)");
    }
    let mut rows = vec![[
        "NAME:VERSION".to_string(),
        "MODEL VERSION".into(),
        "CLASSES".into(),
        "SIZE".into(),
        "CONTRACT".into(),
    ]];
    for v in &scan.versions {
        let file = v.model();
        let row = match check(&file) {
            Ok(m) => [
                v.spec(),
                m.info().version.clone(),
                m.info().classes().to_string(),
                megabytes(&file),
                "ok".into(),
            ],
            Err(e) => [
                v.spec(),
                "-".into(),
                "-".into(),
                megabytes(&file),
                format!("broken: {}", short(&e)),
            ],
        };
        rows.push(row);
    }
    print_table(&rows);
    for s in &scan.strays {
        println!("ignored: {} ({})", s.path.display(), s.why);
    }
    Ok(ExitCode::SUCCESS)
}

/// What is wrong with a model, without the path the caller already shows.
fn short(e: &ModelError) -> String {
    match e {
        ModelError::Contract { problems, .. } => problems.join("; "),
        other => other.to_string(),
    }
}

fn print_table(rows: &[[String; 5]]) {
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        println!("{}", line.trim_end());
    }
}

fn show(repo: &RepositoryArgs, spec: &str) -> anyhow::Result<ExitCode> {
    let version = repo.open()?.resolve(spec)?;
    let file = version.model();
    let model = check(&file)?;
    let i = model.info();
    let d = model.describe();
    println!("{}", version.spec());
    println!("  file:          {} ({})", file.display(), megabytes(&file));
    println!("  model:         {} {}", i.name, i.version);
    println!(
        "  input:         {} {:?} float32 (batch, frames, height, width, 1)",
        d.input.name, d.input.shape
    );
    println!(
        "  output:        {} {:?} float32 CTC {} (batch, frames, classes)",
        d.output.name,
        d.output.shape,
        if i.outputs_logits {
            "logits"
        } else {
            "probabilities"
        }
    );
    println!(
        "  window:        {} frames of {}x{} at {} fps",
        i.frames, i.width, i.height, i.fps
    );
    println!(
        "  vocabulary:    {} classes, blank at {}: {}",
        i.classes(),
        i.blank,
        serde_json::to_string(&i.vocabulary)?
    );
    println!(
        "  normalisation: input = pixel * {} + {}",
        i.scale, i.offset
    );
    match model.front_back() {
        Some(fb) => println!(
            "  parts:         front.onnx + back.onnx: each frame's front end computed once ({} frames of context each side, {} features a frame)",
            fb.context(),
            fb.feature_size()
        ),
        None => println!(
            "  parts:         one graph: every window runs it whole (cut a frames2d model with model/mouthmap_model/split.py to compute each frame once)"
        ),
    }
    match version.card() {
        Some(card) => println!("  card:          {}", card.display()),
        None => println!(
            "  card:          none (add {}/MODEL_CARD.md)",
            version.dir.display()
        ),
    }
    println!("  metadata:");
    for (k, v) in &d.metadata {
        let one_line = v.replace('\n', " ");
        let shown: String = one_line.chars().take(160).collect();
        let more = if one_line.chars().count() > 160 {
            " ..."
        } else {
            ""
        };
        println!("    {k}: {shown}{more}");
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(repo: &RepositoryArgs, specs: &[String]) -> anyhow::Result<ExitCode> {
    let mut targets: Vec<(String, PathBuf)> = Vec::new();
    if specs.is_empty() {
        let repository = repo.open()?;
        let scan = repository.scan()?;
        if scan.versions.is_empty() {
            anyhow::bail!(
                "no model in {} to validate (add one as NAME/VERSION/{MODEL_FILE})",
                repository.root().display()
            );
        }
        targets.extend(scan.versions.iter().map(|v| (v.spec(), v.model())));
    } else {
        for spec in specs {
            targets.push((spec.clone(), repo.model_file(Some(spec))?));
        }
    }
    let mut broken = 0;
    for (what, file) in &targets {
        match check(file) {
            Ok(m) => println!(
                "ok      {what}: {} {}, {} classes, {} frames of {}x{}",
                m.info().name,
                m.info().version,
                m.info().classes(),
                m.info().frames,
                m.info().width,
                m.info().height
            ),
            Err(ModelError::Contract { problems, .. }) => {
                broken += 1;
                println!("broken  {what} ({}):", file.display());
                for p in problems {
                    println!("        - {p}");
                }
            }
            Err(e) => {
                broken += 1;
                println!("broken  {what}: {e}");
            }
        }
    }
    Ok(if broken == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{broken} of {} models break the contract (docs/contracts.md)",
            targets.len()
        );
        ExitCode::FAILURE
    })
}

/// A protobuf text-format string literal.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Triton's `config.pbtxt` for a model: the ONNX Runtime backend, the
/// contract's input and output without the batch axis (Triton adds it up
/// to `max_batch_size`), our batcher's settings as Triton's dynamic
/// batching, and the model's metadata as parameters, so a Triton client
/// finds the vocabulary and normalisation where ours does.
pub fn triton_config(
    name: &str,
    d: &Description,
    max_batch: usize,
    max_queue_delay: Duration,
    device: DeviceArg,
) -> String {
    let dims = |shape: &[i64]| {
        shape
            .iter()
            .skip(1)
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut c = String::new();
    let _ = writeln!(c, "name: {}", quoted(name));
    let _ = writeln!(c, "backend: \"onnxruntime\"");
    let _ = writeln!(c, "max_batch_size: {max_batch}");
    let _ = writeln!(
        c,
        "input [\n  {{\n    name: {}\n    data_type: TYPE_FP32\n    dims: [ {} ]\n  }}\n]",
        quoted(&d.input.name),
        dims(&d.input.shape)
    );
    let _ = writeln!(
        c,
        "output [\n  {{\n    name: {}\n    data_type: TYPE_FP32\n    dims: [ {} ]\n  }}\n]",
        quoted(&d.output.name),
        dims(&d.output.shape)
    );
    let _ = writeln!(
        c,
        "dynamic_batching {{\n  max_queue_delay_microseconds: {}\n}}",
        max_queue_delay.as_micros()
    );
    let kind = match device {
        DeviceArg::Cpu => "KIND_CPU",
        DeviceArg::Cuda => "KIND_GPU",
    };
    let _ = writeln!(
        c,
        "instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]"
    );
    for (k, v) in &d.metadata {
        let _ = writeln!(
            c,
            "parameters {{\n  key: {}\n  value {{\n    string_value: {}\n  }}\n}}",
            quoted(k),
            quoted(v)
        );
    }
    c
}

/// Writes `version` into the Triton model repository `out`; returns the
/// files written.
fn export_triton(
    version: &Version,
    out: &Path,
    max_batch: usize,
    max_queue_delay: Duration,
    device: DeviceArg,
) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(max_batch >= 1, "--max-batch must be at least 1");
    let model = check(&version.model())?;
    // The contract's shapes as the graph and its metadata fix them: Triton
    // wants every axis but the batch known.
    let i = model.info();
    let mut d = model.describe();
    d.input.shape = vec![-1, i.frames as i64, i.height as i64, i.width as i64, 1];
    d.output.shape = vec![-1, i.frames as i64, i.classes() as i64];
    let dir = out.join(&version.name);
    let vdir = dir.join(version.version.to_string());
    std::fs::create_dir_all(&vdir).with_context(|| format!("cannot create {}", vdir.display()))?;
    let config = dir.join("config.pbtxt");
    std::fs::write(
        &config,
        triton_config(&version.name, &d, max_batch, max_queue_delay, device),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let onnx = vdir.join(MODEL_FILE);
    std::fs::copy(version.model(), &onnx)
        .with_context(|| format!("cannot copy the model to {}", onnx.display()))?;
    Ok(vec![config, onnx])
}

#[cfg(test)]
mod tests {
    use super::*;
    use mouthmap_inferencer::model::Tensor;

    #[test]
    fn a_triton_config_drops_the_batch_axis_and_escapes_metadata() {
        let d = Description {
            input: Tensor {
                name: "frames".into(),
                shape: vec![-1, 75, 46, 140, 1],
            },
            output: Tensor {
                name: "probs".into(),
                shape: vec![-1, 75, 28],
            },
            metadata: [("vocabulary".to_string(), "[\" \", \"a\"]".to_string())]
                .into_iter()
                .collect(),
        };
        let c = triton_config("m", &d, 16, Duration::from_millis(20), DeviceArg::Cuda);
        assert!(c.contains("dims: [ 75, 46, 140, 1 ]"), "{c}");
        assert!(c.contains("dims: [ 75, 28 ]"), "{c}");
        assert!(c.contains("max_batch_size: 16"), "{c}");
        assert!(c.contains("max_queue_delay_microseconds: 20000"), "{c}");
        assert!(c.contains("kind: KIND_GPU"), "{c}");
        assert!(c.contains(r#"string_value: "[\" \", \"a\"]""#), "{c}");
    }
}
