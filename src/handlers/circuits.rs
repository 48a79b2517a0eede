//! This isolate's view of the circuit breakers (see `breaker.rs`): updated at
//! once from its own attempts, and synchronised with each link's
//! `CircuitBreaker` Durable Object after the response, in `ctx.wait_until`,
//! so a circuit opened anywhere closes the link everywhere within a second
//! or so — without a Durable Object call on the request's path, and with at
//! most one report per link per second while the link is healthy. The same
//! objects keep each link's live latency (`latency.rs`) for the `latency`
//! routing strategy.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{json, Value};
use worker::{console_error, Env, Method, ObjectNamespace, Request, RequestInit};

use crate::bindings::CIRCUITS;
use crate::breaker::{must_report, Admission, BreakerPolicy, BreakerState};
use crate::latency::LatencyStat;
use crate::ledger::AttemptRow;

#[derive(Default)]
struct Entry {
    state: BreakerState,
    probe_in_flight: bool,
    latency: Option<LatencyStat>,
    /// When this isolate last reported an attempt on the link.
    last_report_ms: Option<u64>,
    /// The view was not clean before the latest attempt: report the next one at once.
    after_failure: bool,
    /// When this isolate last adopted (or started to fetch) the object's state.
    synced_ms: Option<u64>,
}

/// What a link's `CircuitBreaker` object answers.
#[derive(serde::Deserialize)]
struct Shared {
    #[serde(flatten)]
    state: BreakerState,
    #[serde(default)]
    latency: Option<LatencyStat>,
}

/// This isolate's latest view of a link's latency.
pub fn latency(qualified: &str) -> Option<LatencyStat> {
    VIEW.with(|v| v.borrow().get(qualified).and_then(|e| e.latency))
}

thread_local! {
    static VIEW: RefCell<HashMap<String, Entry>> = RefCell::new(HashMap::new());
}

/// May a request use `qualified` now? A `Probe` answer reserves the one
/// probe slot until the outcome is recorded.
pub fn admit(qualified: &str, now_ms: u64) -> Admission {
    VIEW.with(|v| {
        let mut view = v.borrow_mut();
        let entry = view.entry(qualified.to_owned()).or_default();
        let a = entry.state.admission(now_ms, entry.probe_in_flight);
        if a == Admission::Probe {
            entry.probe_in_flight = true;
        }
        a
    })
}

/// Whether an attempt says the provider is healthy: success, or a client-side
/// 4xx (the provider answered; the request was the problem).
pub fn attempt_is_healthy(a: &AttemptRow) -> bool {
    a.ok || a.status.is_some_and(client_error)
}

/// A 4xx that is the request's fault, not the provider's (408, 409, 425 and
/// 429 say the provider is busy or slow).
pub fn client_error(status: u16) -> bool {
    (400..500).contains(&status) && ![408, 409, 425, 429].contains(&status)
}

/// Records an attempt's outcome in this isolate's view; `latency_ms` for a
/// successful attempt.
pub fn record(
    qualified: &str,
    healthy: bool,
    latency_ms: Option<u64>,
    now_ms: u64,
    policy: BreakerPolicy,
) {
    VIEW.with(|v| {
        let mut view = v.borrow_mut();
        let entry = view.entry(qualified.to_owned()).or_default();
        entry.after_failure |= entry.state != BreakerState::default();
        entry.state.record(healthy, now_ms, policy);
        entry.probe_in_flight = false;
        if let Some(ms) = latency_ms {
            entry
                .latency
                .get_or_insert_with(LatencyStat::default)
                .observe(ms, now_ms);
        }
    });
}

/// Adopts what a link's object answered: the circuit state (the
/// authority, which has heard from every isolate and from the probes) and the
/// newer of the two latency views.
fn adopt(qualified: &str, shared: Shared, now_ms: u64) {
    VIEW.with(|v| {
        let mut view = v.borrow_mut();
        let entry = view.entry(qualified.to_owned()).or_default();
        entry.state = shared.state;
        entry.latency = match (entry.latency, shared.latency) {
            (Some(mine), Some(theirs)) => Some(mine.newer(theirs)),
            (mine, theirs) => mine.or(theirs),
        };
        entry.synced_ms = Some(now_ms);
    });
}

/// One request to a link's `CircuitBreaker` object; `body` makes it a POST.
async fn call(
    namespace: &ObjectNamespace,
    qualified: &str,
    path: &str,
    body: Option<String>,
) -> worker::Result<worker::Response> {
    let stub = namespace.id_from_name(qualified)?.get_stub()?;
    let mut init = RequestInit::new();
    if let Some(body) = body {
        init.with_method(Method::Post)
            .with_body(Some(wasm_bindgen::JsValue::from_str(&body)));
    }
    let req = Request::new_with_init(&format!("https://circuit{path}"), &init)?;
    stub.fetch_with_request(req).await
}

/// Whether a health probe may run for `slot_ms` on this link (one per slot
/// across every cron run). Without the binding, or when the object cannot
/// be reached, no probe runs: a probe nobody records would be money spent
/// for nothing.
pub async fn claim_probe(env: &Env, qualified: &str, slot_ms: u64) -> bool {
    let Ok(namespace) = env.durable_object(CIRCUITS) else {
        return false;
    };
    let body = json!({ "slot_ms": slot_ms }).to_string();
    let result = async {
        let mut resp = call(&namespace, qualified, "/claim", Some(body)).await?;
        resp.json::<Value>().await
    }
    .await;
    match result {
        Ok(v) => v.get("granted").and_then(Value::as_bool) == Some(true),
        Err(e) => {
            console_error!("probe claim for {qualified} failed: {e}");
            false
        }
    }
}

/// Reports a health probe's outcome (`report` is the object's `/report`
/// body with its `probe` part) and adopts the answer in this isolate.
pub async fn report_probe(env: &Env, qualified: &str, report: &Value, now_ms: u64) {
    let Ok(namespace) = env.durable_object(CIRCUITS) else {
        return;
    };
    let result = async {
        let mut resp = call(&namespace, qualified, "/report", Some(report.to_string())).await?;
        resp.json::<Shared>().await
    }
    .await;
    match result {
        Ok(shared) => adopt(qualified, shared, now_ms),
        Err(e) => console_error!("probe report for {qualified} failed: {e}"),
    }
}

/// A link's whole state as its object keeps it (`GET /admin/health`).
pub async fn shared_state(env: &Env, qualified: &str) -> Option<Value> {
    let namespace = env.durable_object(CIRCUITS).ok()?;
    let mut resp = call(&namespace, qualified, "/state", None).await.ok()?;
    resp.json::<Value>().await.ok()
}

/// With health probes on, re-reads the state of the route's links this
/// isolate has not synced for `refresh_ms` — how a circuit a probe opened
/// reaches isolates whose own traffic has not failed there (yet). After the
/// response, in `ctx.wait_until`; at most one read per link per interval per
/// isolate, and none for links just reported.
async fn refresh(namespace: &ObjectNamespace, links: &[String], now_ms: u64, refresh_ms: u64) {
    for qualified in links {
        let due = VIEW.with(|v| {
            let mut view = v.borrow_mut();
            let entry = view.entry(qualified.clone()).or_default();
            let due = entry
                .synced_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= refresh_ms);
            if due {
                // Concurrent requests of this isolate do not read it again.
                entry.synced_ms = Some(now_ms);
            }
            due
        });
        if !due {
            continue;
        }
        let result = async {
            let mut resp = call(namespace, qualified, "/state", None).await?;
            resp.json::<Shared>().await
        }
        .await;
        match result {
            Ok(shared) => adopt(qualified, shared, now_ms),
            Err(e) => console_error!("circuit refresh for {qualified} failed: {e}"),
        }
    }
}

/// Reports each attempt to its link's Durable Object — failures at once,
/// healthy attempts at most once per `HEALTHY_REPORT_INTERVAL_MS` per link
/// (so the shared latency gets a sample a second from each isolate; the
/// isolate's own view has every one) — and adopts the state it answers (the
/// authority, which has heard from every isolate). With the breaker off, only
/// successful attempts are reported (for their latency).
///
/// `refresh_ms` (health probes on): then also re-read the state of the
/// route's `links` not synced that recently (see [`refresh`]).
pub async fn sync(
    env: &Env,
    due: &[DueReport],
    links: &[String],
    now_ms: u64,
    policy: BreakerPolicy,
    refresh_ms: Option<u64>,
) {
    if due.is_empty() && (refresh_ms.is_none() || links.is_empty()) {
        return;
    }
    let Ok(namespace) = env.durable_object(CIRCUITS) else {
        // Without the binding circuits stay per isolate.
        return;
    };
    // Reports first: their answers refresh those links, so no second read.
    sync_reports(&namespace, due, now_ms, policy).await;
    if let Some(refresh_ms) = refresh_ms {
        refresh(&namespace, links, now_ms, refresh_ms).await;
    }
}

/// What one attempt tells its link's Durable Object.
pub struct DueReport {
    /// `provider/model`: the link, and the Durable Object's name.
    link: String,
    healthy: bool,
    latency_ms: Option<u64>,
}

/// The reports due now to the links' Durable Objects (see [`sync`]), marked
/// as reported in this isolate's view. Decided before the response goes out,
/// so a request with nothing to report starts no `waitUntil` and no Durable
/// Object lookup at all.
pub fn due_reports(attempts: &[AttemptRow], now_ms: u64, policy: BreakerPolicy) -> Vec<DueReport> {
    let breaker_on = policy.failures_to_open > 0;
    attempts
        .iter()
        .filter(|a| breaker_on || a.ok)
        .filter_map(|a| {
            let link = format!("{}/{}", a.provider, a.model);
            let healthy = attempt_is_healthy(a);
            let due = VIEW.with(|v| {
                let mut view = v.borrow_mut();
                let entry = view.entry(link.clone()).or_default();
                let due = must_report(healthy, entry.after_failure, entry.last_report_ms, now_ms);
                if due {
                    entry.last_report_ms = Some(now_ms);
                    entry.after_failure = false;
                }
                due
            });
            due.then(|| DueReport {
                link,
                healthy,
                latency_ms: a.ok.then_some(a.latency_ms),
            })
        })
        .collect()
}

async fn sync_reports(
    namespace: &ObjectNamespace,
    due: &[DueReport],
    now_ms: u64,
    policy: BreakerPolicy,
) {
    for report in due {
        let qualified = &report.link;
        let body = json!({
            "healthy": report.healthy,
            "latency_ms": report.latency_ms,
            "now_ms": now_ms,
            "failures_to_open": policy.failures_to_open,
            "cool_down_ms": policy.cool_down_ms,
        })
        .to_string();
        let result = async {
            let mut resp = call(namespace, qualified, "/report", Some(body)).await?;
            resp.json::<Shared>().await
        }
        .await;
        match result {
            Ok(shared) => adopt(qualified, shared, now_ms),
            Err(e) => console_error!("circuit sync for {qualified} failed: {e}"),
        }
    }
}

thread_local! {
    /// Rate-limit readings by `provider/model` (OpenAI and Anthropic report
    /// limits per model), and the gateway's own request count by provider.
    static CAPACITY: RefCell<HashMap<String, crate::capacity::ProviderLoad>> =
        RefCell::new(HashMap::new());
}

/// Reads the rate-limit headers of a response from `provider`'s `model`.
pub fn observe_capacity(provider: &str, model: &str, headers: &worker::Headers, now_ms: u64) {
    // Fetched by name, not by iterating the headers: a provider answers with
    // twenty-odd headers, each several calls across the JS boundary to read.
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for family in &crate::capacity::RATE_LIMIT_HEADER_FAMILIES {
        for (i, name) in family.iter().enumerate() {
            if let Some(v) = headers.get(name).ok().flatten() {
                pairs.push((name, v));
            } else if i == 1 && pairs.is_empty() {
                // Neither `remaining` header: no window from this family.
                break;
            }
        }
        if !pairs.is_empty() {
            break;
        }
    }
    if pairs.is_empty() {
        return;
    }
    let reading =
        crate::capacity::reading_from_headers(pairs.iter().map(|(k, v)| (*k, v.as_str())), now_ms);
    if let Some(r) = reading {
        CAPACITY.with(|c| {
            c.borrow_mut()
                .entry(format!("{provider}/{model}"))
                .or_default()
                .observe(r);
        });
    }
}

/// Counts a request to `provider`'s `model` as it leaves (not when it is
/// answered, so a burst sees itself, and the saturation queue never hands
/// one slot out twice).
pub fn capacity_sent(provider: &str, model: &str, now_ms: u64) {
    CAPACITY.with(|c| {
        let mut c = c.borrow_mut();
        c.entry(provider.to_owned()).or_default().sent(now_ms);
        c.entry(format!("{provider}/{model}"))
            .or_default()
            .sent(now_ms);
    });
}

/// The room one capacity resource has, as far as this isolate knows: a
/// provider account (its own count against `rpm_limit`) or a
/// `provider/model` (its latest reading).
pub fn capacity_room(
    resource: &str,
    now_ms: u64,
    rpm_limit: Option<u32>,
    threshold_pct: u8,
) -> crate::capacity::Room {
    CAPACITY.with(|c| {
        c.borrow_mut()
            .get_mut(resource)
            .map_or(crate::capacity::Room::FREE, |l| {
                l.room(now_ms, rpm_limit, threshold_pct)
            })
    })
}
