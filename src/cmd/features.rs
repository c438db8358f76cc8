//! `mouthmap features`: the feature store's service and its command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_feature_store::enrich::to_json;
use mouthmap_feature_store::service::{self, FeaturesHandler};
use mouthmap_feature_store::{OnlineStore, Row, Value};

use super::{FeatureStoreArgs, KafkaArgs, ServiceWiring, duration, run_service};

pub const LONG_ABOUT: &str = "\
The feature store: online features per stream and per speaker, in Redis.

Features are declared in one TOML file (entities, feature views with typed
fields, a TTL and the stage that writes each view); the shipped declarations
are feature-store/features.toml, another file is named with --features-file.

  mouthmap features set stream cam-1 speaker_id=alice grammar=grid
  mouthmap features get stream cam-1
  mouthmap features list            # the declarations
  mouthmap features list stream     # streams with stored features
  mouthmap features serve           # keep stream and speaker aggregates from `transcripts`
  mouthmap features rebuild         # recompute them from the start of `transcripts`

The decoder reads a stream's features and its speaker's into every
transcript; `grammar` (grid) or `vocabulary` (words) choose how the stream is
decoded. The preprocessor writes the stream's video quality as it goes.";

#[derive(Args, Debug)]
pub struct FeaturesArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Keep per-stream and per-speaker aggregates from the `transcripts` topic (a consumer-group service).
    Serve(ServeArgs),
    /// Clear the aggregates and recompute them from the beginning of `transcripts` (the topic is the offline source), then exit.
    Rebuild {
        /// Give up when no message arrives for this long before the end is reached.
        #[arg(long, value_parser = duration, default_value = "30s")]
        idle_timeout: Duration,
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        store: FeatureStoreArgs,
    },
    /// Set features of an entity: `set stream cam-1 speaker_id=alice grammar=grid`.
    Set {
        /// Entity: `stream` or `speaker` (as declared).
        entity: String,
        /// The entity's key: a stream id, a speaker id.
        key: String,
        /// FIELD=VALUE pairs; each field's view is found from the declarations.
        #[arg(required = true, value_name = "FIELD=VALUE")]
        values: Vec<String>,
        #[command(flatten)]
        store: FeatureStoreArgs,
    },
    /// Remove features of an entity (named fields, or every view when none is named).
    Unset {
        entity: String,
        key: String,
        #[arg(value_name = "FIELD")]
        fields: Vec<String>,
        #[command(flatten)]
        store: FeatureStoreArgs,
    },
    /// Print an entity's features as JSON: `{view: {field: value}}`, with each view's remaining TTL.
    Get {
        entity: String,
        key: String,
        #[command(flatten)]
        store: FeatureStoreArgs,
    },
    /// Without ENTITY: the declarations. With ENTITY: the keys that have features stored.
    List {
        entity: Option<String>,
        #[command(flatten)]
        store: FeatureStoreArgs,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Consumer group; replicas share the streams (a stream's transcripts stay in order).
    #[arg(
        long,
        env = "MOUTHMAP_FEATURES_GROUP",
        default_value = "mouthmap-features"
    )]
    group: String,

    /// Where GET /metrics is served.
    #[arg(
        long,
        env = "MOUTHMAP_FEATURES_METRICS",
        default_value = "127.0.0.1:9104"
    )]
    metrics_listen: SocketAddr,

    #[command(flatten)]
    kafka: KafkaArgs,

    #[command(flatten)]
    store: FeatureStoreArgs,
}

pub async fn run(args: FeaturesArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Serve(a) => serve(a).await,
        Action::Rebuild {
            idle_timeout,
            kafka,
            store,
        } => rebuild(&kafka, &store.store()?, idle_timeout).await,
        Action::Set {
            entity,
            key,
            values,
            store,
        } => {
            let store = store.store()?;
            let mut by_view: BTreeMap<String, Row> = BTreeMap::new();
            for pair in &values {
                let (field, text) = pair
                    .split_once('=')
                    .with_context(|| format!("{pair:?} is not FIELD=VALUE"))?;
                let view = store.registry().view_with_field(&entity, field.trim())?;
                let ty = view.field_type(field.trim())?;
                let value = Value::parse(ty, text).with_context(|| {
                    format!(
                        "{}.{} is declared {ty}; {text:?} is not one",
                        view.name,
                        field.trim()
                    )
                })?;
                by_view
                    .entry(view.name.clone())
                    .or_default()
                    .insert(field.trim().to_string(), value);
            }
            for (view, row) in &by_view {
                store
                    .write(view, &key, row)
                    .await
                    .with_context(|| format!("writing {view} of {entity} {key:?}"))?;
            }
            print_entity(&store, &entity, &key).await
        }
        Action::Unset {
            entity,
            key,
            fields,
            store,
        } => {
            let store = store.store()?;
            store.registry().entity(&entity)?;
            if fields.is_empty() {
                let views: Vec<String> = store
                    .registry()
                    .views_of(&entity)
                    .map(|v| v.name.clone())
                    .collect();
                for v in views {
                    store.remove(&v, &key, &[]).await?;
                }
            } else {
                for f in &fields {
                    let view = store.registry().view_with_field(&entity, f)?.name.clone();
                    store.remove(&view, &key, std::slice::from_ref(f)).await?;
                }
            }
            print_entity(&store, &entity, &key).await
        }
        Action::Get { entity, key, store } => print_entity(&store.store()?, &entity, &key).await,
        Action::List { entity, store } => {
            let store = store.store()?;
            match entity {
                None => {
                    for v in store.registry().views.values() {
                        println!(
                            "{} (entity {}, written by {}, ttl {}){}",
                            v.name,
                            v.entity,
                            v.writer,
                            mouthmap_feature_store::registry::format_ttl(v.ttl),
                            if v.description.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", v.description)
                            }
                        );
                        for (f, ty) in &v.fields {
                            println!("  {f}: {ty}");
                        }
                    }
                }
                Some(entity) => {
                    store.registry().entity(&entity)?;
                    let views: Vec<String> = store
                        .registry()
                        .views_of(&entity)
                        .map(|v| v.name.clone())
                        .collect();
                    let mut keys = std::collections::BTreeSet::new();
                    for v in views {
                        keys.extend(store.keys(&v).await?);
                    }
                    for k in keys {
                        println!("{k}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn print_entity(store: &OnlineStore, entity: &str, key: &str) -> anyhow::Result<ExitCode> {
    store.registry().entity(entity)?;
    let views: Vec<String> = store
        .registry()
        .views_of(entity)
        .map(|v| v.name.clone())
        .collect();
    let lookups: Vec<(&str, &str)> = views.iter().map(|v| (v.as_str(), key)).collect();
    let rows = store.read(&lookups).await?;
    let mut out = serde_json::Map::new();
    for (view, row) in views.iter().zip(rows) {
        if let Some(row) = row {
            let mut j = to_json(&row);
            if let Some(ttl) = store.ttl(view, key).await? {
                j["_ttl_s"] = serde_json::json!(ttl.as_secs());
            }
            out.insert(view.clone(), j);
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let metrics = StageMetrics::new("features");
    let mut handler = FeaturesHandler {
        store: args.store.store()?,
    };
    let wiring = ServiceWiring {
        stage: "features",
        kafka: &args.kafka,
        group: &args.group,
        input_topic: &args.kafka.transcripts_topic,
        output_topic: "(redis)",
        metrics_listen: args.metrics_listen,
        tick: Duration::from_secs(1),
    };
    run_service(wiring, &mut handler, &metrics).await
}

/// Clears the aggregate views, then applies every transcript from the
/// beginning of the topic to the end it had when the rebuild started.
async fn rebuild(
    kafka: &KafkaArgs,
    store: &OnlineStore,
    idle: Duration,
) -> anyhow::Result<ExitCode> {
    let topic = &kafka.transcripts_topic;
    let settings = kafka.settings("mouthmap-features-rebuild")?;
    eprintln!("rebuilding from {topic}");
    let done = service::rebuild(store, &settings, topic, idle)
        .await
        .with_context(|| format!("rebuilding from {topic} on {}", kafka.brokers))?;
    eprintln!(
        "rebuilt: cleared {} keys, {} transcripts applied, {} skipped (not transcripts, or ids that cannot be keys)",
        done.cleared, done.applied, done.skipped
    );
    Ok(ExitCode::SUCCESS)
}
