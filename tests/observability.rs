//! The shipped observability files against the running services: a real
//! Prometheus with deploy/prometheus/prometheus.yml (its targets pointed at
//! this test's services, its rules as shipped) scrapes every service while
//! streams run through the pipeline; every target is up, and every series
//! a Grafana panel or an alert rule selects exists (so no panel or rule
//! names a metric, or a label, nobody exports).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pipeline::*;
use common::*;
use mouthmap_bus::kafka::{KafkaSettings, OutMessage, Producer};
use mouthmap_contracts::{TopicKind, headers};

/// The shipped Prometheus configuration with each job's DNS discovery
/// replaced by this test's address for it, the ingest token file replaced,
/// and a short scrape interval.
fn scrape_config(shipped: &str, ports: &HashMap<&str, u16>, token_file: &Path) -> String {
    let mut out = Vec::new();
    let mut lines = shipped.lines().peekable();
    while let Some(line) = lines.next() {
        let indent = &line[..line.len() - line.trim_start().len()];
        match line.trim() {
            "dns_sd_configs:" => {
                let names = lines.next().expect("names");
                let role = names
                    .trim()
                    .trim_start_matches("- names: [")
                    .trim_end_matches(']');
                lines.next(); // type: A
                lines.next(); // port: N
                let port = ports
                    .get(role)
                    .unwrap_or_else(|| panic!("no service for job {role}"));
                out.push(format!("{indent}static_configs:"));
                out.push(format!("{indent}  - targets: ['127.0.0.1:{port}']"));
            }
            t if t.starts_with("credentials_file:") => {
                out.push(format!(
                    "{indent}credentials_file: {}",
                    token_file.display()
                ));
            }
            t if t.starts_with("scrape_interval:") => {
                out.push(format!("{indent}scrape_interval: 2s"))
            }
            t if t.starts_with("evaluation_interval:") => {
                out.push(format!("{indent}evaluation_interval: 2s"))
            }
            _ => out.push(line.to_string()),
        }
    }
    out.join("\n") + "\n"
}

/// Every series selector (a metric with its label matchers, as written)
/// in the dashboard's queries and the alert rules' expressions.
fn selectors(root: &Path) -> BTreeSet<String> {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/mouthmap.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let mut in_expr = false;
    for line in alerts.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("expr:") {
            in_expr = true;
            exprs.push(rest.trim_start_matches(" |").to_string());
        } else if in_expr && !t.contains(':') {
            exprs.push(t.to_string());
        } else {
            in_expr = false;
        }
    }
    let mut out = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("mouthmap_").or_else(|| rest.find("up{")) {
            let s = &rest[i..];
            let name_end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            let mut end = name_end;
            if s[name_end..].starts_with('{') {
                end = name_end + s[name_end..].find('}').unwrap() + 1;
            }
            out.insert(s[..end].to_string());
            rest = &s[end..];
        }
    }
    out
}

async fn prometheus_get(port: u16, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
    let url =
        reqwest::Url::parse_with_params(&format!("http://127.0.0.1:{port}{path}"), query).unwrap();
    reqwest::Client::new()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_service_and_every_panel_and_rule_has_series() {
    if !available(&[Need::Broker, Need::Redis, Need::Prometheus]) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let brokers = brokers();
    let t = Topics::new();
    let settings = KafkaSettings::new(&brokers, "t");
    t.create(&brokers).await;
    let redis = Redis::start();
    let ports: HashMap<&str, u16> = [
        "ingest",
        "preprocess",
        "infer",
        "decode",
        "features",
        "gateway",
    ]
    .into_iter()
    .map(|r| (r, free_port()))
    .collect();
    let model = model().display().to_string();
    let media = grid_clip("bbie8n.mp4").parent().unwrap().to_path_buf();
    let service = |role: &str, extra: &[String]| {
        let mut c = t.command(&brokers);
        if role == "features" {
            c.args(["features", "serve"]);
        } else {
            c.arg(role);
        }
        if role == "ingest" || role == "gateway" {
            c.arg("--listen").arg(format!("127.0.0.1:{}", ports[role]));
            if role == "gateway" {
                c.arg("--grpc-listen")
                    .arg(format!("127.0.0.1:{}", free_port()));
            }
        } else {
            c.arg("--metrics-listen")
                .arg(format!("127.0.0.1:{}", ports[role]))
                .arg("--group")
                .arg(unique(role));
        }
        c.env("MOUTHMAP_REDIS_URL", redis.url()).args(extra);
        Proc::spawn(role, &mut c)
    };
    let _services = [
        service("preprocess", &[]),
        service("infer", &["--model".into(), model]),
        service("decode", &[]),
        service("features", &[]),
        service(
            "ingest",
            &["--media-root".into(), media.display().to_string()],
        ),
        service("gateway", &[]),
    ];
    for port in ports.values() {
        wait_port(*port, Duration::from_secs(60));
    }

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("ingest-token");
    std::fs::write(&token, TEST_TOKEN).unwrap();
    let shipped = std::fs::read_to_string(root.join("deploy/prometheus/prometheus.yml")).unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        scrape_config(&shipped, &ports, &token),
    )
    .unwrap();
    std::fs::copy(
        root.join("deploy/prometheus/alerts.yml"),
        dir.path().join("alerts.yml"),
    )
    .unwrap();
    let prom_port = free_port();
    let _prometheus = Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_port(prom_port, Duration::from_secs(30));

    // Streams through the API, and a message that must be dead-lettered.
    let api = ports["ingest"];
    let client = reqwest::Client::new();
    let ids: Vec<String> = ["bbie8n", "bras6n"].iter().map(|c| unique(c)).collect();
    for (id, clip) in ids.iter().zip(["bbie8n", "bras6n"]) {
        let r = client
            .post(format!("http://127.0.0.1:{api}/v1/streams"))
            .bearer_auth(TEST_TOKEN)
            .json(&serde_json::json!({
                "id": id,
                "source": grid_clip(&format!("{clip}.mp4")),
                "realtime": true,
            }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    Producer::new(&settings)
        .unwrap()
        .send_and_wait(
            OutMessage::new(&t.frames, "bad-stream", b"not an envelope".to_vec())
                .header(headers::SCHEMA, TopicKind::Frames.schema_header()),
        )
        .await
        .unwrap();
    read_until(&brokers, &t.transcripts, |m| {
        ids.iter().all(|id| finals_for(m, id) >= 1)
    })
    .await;

    // Every target up, every selected series there (scrapes every 2 s).
    let wanted = selectors(root);
    assert!(wanted.len() >= 10, "selectors found: {wanted:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let targets = prometheus_get(prom_port, "/api/v1/targets", &[]).await;
        let active = targets["data"]["activeTargets"].as_array().unwrap().clone();
        let down: Vec<String> = active
            .iter()
            .filter(|t| t["health"] != "up")
            .map(|t| format!("{} {} {}", t["labels"]["job"], t["health"], t["lastError"]))
            .collect();
        let mut missing = Vec::new();
        for s in &wanted {
            // A histogram is selected through its buckets, sum or count.
            let selector = match s.split_once('{') {
                Some((name, labels)) if name.ends_with("_seconds") || name.ends_with("_size") => {
                    format!("{name}_count{{{labels}")
                }
                None if s.ends_with("_seconds") || s.ends_with("_size") => format!("{s}_count"),
                _ => s.clone(),
            };
            let series =
                prometheus_get(prom_port, "/api/v1/series", &[("match[]", &selector)]).await;
            if series["data"].as_array().is_none_or(|a| a.is_empty()) {
                missing.push(selector);
            }
        }
        if active.len() == ports.len() && down.is_empty() && missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s: {} of {} targets, down: {down:?}; selectors without series: {missing:?}",
            active.len(),
            ports.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The rules load and evaluate (the dead letter above makes one fire).
    let rules = prometheus_get(prom_port, "/api/v1/rules", &[]).await;
    let loaded: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(loaded.len(), 5, "{loaded:?}");
    let lag = prometheus_get(
        prom_port,
        "/api/v1/query",
        &[("query", "count(mouthmap_consumer_lag)")],
    )
    .await;
    assert!(
        lag["data"]["result"][0]["value"][1]
            .as_str()
            .is_some_and(|n| n.parse::<f64>().unwrap() > 0.0),
        "consumer lag series: {lag}"
    );
}
