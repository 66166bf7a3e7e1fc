//! `http`: a weighted mix of REST calls (login, list chats, send, list messages, search) from a
//! fixed number of concurrent workers for a duration. Reports requests/s and latency
//! percentiles per route, and responses by status (0: no response).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use super::api::Api;
use super::args::HttpArgs;
use super::latency::{Percentiles, SharedLatency};
use super::setup::{self, PASSWORD, Population, SetupOptions, Shape};
use super::target::Target;
use super::{progress, report};

/// The routes of the mix, in `--mix` order.
const ROUTES: [&str; 5] = ["login", "list_chats", "send", "list_messages", "search"];

#[derive(Debug, Serialize)]
pub struct RouteStats {
    pub requests: u64,
    pub per_sec: f64,
    pub latency: Percentiles,
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
}

#[derive(Debug, Serialize)]
pub struct HttpSummary {
    pub scenario: &'static str,
    pub users: usize,
    pub concurrency: usize,
    pub duration_secs: u64,
    pub mix: String,
    pub requests: u64,
    pub requests_per_sec: f64,
    /// Responses that were not 2xx (including no response).
    pub errors: u64,
    pub routes: BTreeMap<&'static str, RouteStats>,
}

/// Parses `login=1,send=3,…` into one weight per route (missing routes weigh 0).
pub fn parse_mix(mix: &str) -> anyhow::Result<[u32; 5]> {
    let mut weights = [0u32; 5];
    for part in mix.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = part
            .split_once('=')
            .with_context(|| format!("--mix: `{part}` is not route=weight"))?;
        let i = ROUTES
            .iter()
            .position(|r| *r == name.trim())
            .with_context(|| format!("--mix: unknown route `{name}` (routes: {ROUTES:?})"))?;
        weights[i] = w
            .trim()
            .parse()
            .with_context(|| format!("--mix: weight of `{name}`"))?;
    }
    if weights.iter().all(|w| *w == 0) {
        bail!("--mix: every weight is 0");
    }
    Ok(weights)
}

fn pick(weights: &[u32; 5], rng: &mut StdRng) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.gen_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// What one worker saw: per route, responses by status.
type Statuses = [BTreeMap<u16, u64>; 5];

pub async fn run(a: &HttpArgs) -> anyhow::Result<HttpSummary> {
    let weights = parse_mix(&a.mix)?;
    let c = &a.common;
    let target = Target::parse(&c.server)?;
    let api = Api::new(&target)?;
    let opts = SetupOptions {
        api: &api,
        server: &target.base,
        prefix: c.prefix.as_deref(),
        reuse: c.reuse.as_deref(),
        concurrency: c.setup_concurrency,
        quiet: c.quiet,
    };
    let shape = Shape {
        users: a.users.max(1),
        rooms: a.rooms.max(1),
        rooms_per_user: 1,
    };
    let pop = std::sync::Arc::new(setup::population(&opts, shape).await?);
    let latencies: [SharedLatency; 5] = Default::default();
    let deadline = Instant::now() + Duration::from_secs(a.duration_secs);
    let bar = progress::timer(c.quiet, a.duration_secs, "load");
    let started = Instant::now();
    let workers: Vec<_> = (0..a.concurrency.max(1))
        .map(|w| {
            let api = api.clone();
            let pop = pop.clone();
            let latencies = latencies.clone();
            let bytes = a.message_bytes;
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w as u64);
                let mut recorders = latencies.each_ref().map(|l| l.recorder());
                let mut statuses: Statuses = Default::default();
                while Instant::now() < deadline {
                    let route = pick(&weights, &mut rng);
                    let user = rng.gen_range(0..pop.users.len());
                    let t0 = Instant::now();
                    let status = call(&api, &pop, route, user, bytes, &mut rng).await;
                    recorders[route].record(t0.elapsed().as_micros() as u64);
                    *statuses[route].entry(status).or_insert(0) += 1;
                }
                statuses
            })
        })
        .collect();
    let mut statuses: Statuses = Default::default();
    for w in workers {
        if let Ok(s) = w.await {
            for (all, mine) in statuses.iter_mut().zip(s) {
                for (status, n) in mine {
                    *all.entry(status).or_insert(0) += n;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut routes = BTreeMap::new();
    let (mut requests, mut errors) = (0, 0);
    for (i, name) in ROUTES.iter().enumerate() {
        let n: u64 = statuses[i].values().sum();
        if weights[i] == 0 {
            continue;
        }
        requests += n;
        errors += statuses[i]
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum::<u64>();
        routes.insert(
            *name,
            RouteStats {
                requests: n,
                per_sec: report::rate(n, secs),
                latency: latencies[i].snapshot().summary(),
                statuses: std::mem::take(&mut statuses[i]),
            },
        );
    }
    Ok(HttpSummary {
        scenario: "http",
        users: a.users,
        concurrency: a.concurrency,
        duration_secs: a.duration_secs,
        mix: a.mix.clone(),
        requests,
        requests_per_sec: report::rate(requests, secs),
        errors,
        routes,
    })
}

/// One request of route `route` as user `user`; its status (0: no response).
async fn call(
    api: &Api,
    pop: &Population,
    route: usize,
    user: usize,
    bytes: usize,
    rng: &mut StdRng,
) -> u16 {
    let u = &pop.users[user];
    let room = pop.rooms_of(user)[0];
    let ws = pop.workspace_id;
    let (method, path, body): (Method, String, Option<Value>) = match ROUTES[route] {
        "login" => (
            Method::POST,
            "/api/auth/login".into(),
            Some(json!({"email": u.email, "password": PASSWORD})),
        ),
        "list_chats" => (Method::GET, format!("/api/chats?workspace_id={ws}"), None),
        "send" => {
            let word: u32 = rng.gen_range(0..1000);
            let mut content = format!("http mix benchmark word{word}");
            while content.len() < bytes {
                content.push_str(" lorem");
            }
            (
                Method::POST,
                "/api/messages".into(),
                Some(json!({"chat_id": room, "content": content})),
            )
        }
        "list_messages" => (
            Method::GET,
            format!("/api/messages?chat_id={room}&limit=50"),
            None,
        ),
        _ => (
            Method::POST,
            "/api/search/messages".into(),
            Some(json!({"query": "benchmark", "workspace_id": ws, "limit": 20})),
        ),
    };
    let token = (ROUTES[route] != "login").then_some(u.token.as_str());
    match api.call(method, &path, token, body.as_ref()).await {
        Ok(r) => r.status,
        Err(_) => 0,
    }
}

pub fn print(s: &HttpSummary) {
    let mut rows = vec![(
        "total",
        format!(
            "{} requests, {:.0}/s, {} errors",
            s.requests, s.requests_per_sec, s.errors
        ),
    )];
    for (name, r) in &s.routes {
        rows.push((
            *name,
            format!("{:.0}/s  {}  {:?}", r.per_sec, r.latency.cell(), r.statuses),
        ));
    }
    report::print_table(
        &format!(
            "http: {} workers, {} users, {} s",
            s.concurrency, s.users, s.duration_secs
        ),
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_mix() {
        assert_eq!(
            parse_mix("login=1,list_chats=3,send=3,list_messages=3,search=1").expect("mix"),
            [1, 3, 3, 3, 1]
        );
        assert_eq!(parse_mix("send=2").expect("mix"), [0, 0, 2, 0, 0]);
        assert!(parse_mix("send=0").is_err());
        assert!(parse_mix("post=1").is_err());
        assert!(parse_mix("send").is_err());
    }

    #[test]
    fn picks_only_weighted_routes() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(pick(&[0, 0, 2, 0, 0], &mut rng), 2);
        }
    }
}
