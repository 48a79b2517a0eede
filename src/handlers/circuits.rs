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

use serde_json::json;
use worker::{console_error, Env, Method, Request, RequestInit};

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
    a.ok || matches!(a.status, Some(s) if (400..500).contains(&s) && ![408, 409, 425, 429].contains(&s))
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

/// Reports each attempt to its link's Durable Object — failures at once,
/// healthy attempts at most once per `HEALTHY_REPORT_INTERVAL_MS` per link
/// (so the shared latency gets a sample a second from each isolate; the
/// isolate's own view has every one) — and adopts the state it answers (the
/// authority, which has heard from every isolate). With the breaker off, only
/// successful attempts are reported (for their latency).
pub async fn sync(env: &Env, attempts: &[AttemptRow], now_ms: u64, policy: BreakerPolicy) {
    let breaker_on = policy.failures_to_open > 0;
    if attempts.is_empty() || (!breaker_on && !attempts.iter().any(|a| a.ok)) {
        return;
    }
    let Ok(namespace) = env.durable_object(CIRCUITS) else {
        // Without the binding circuits stay per isolate.
        return;
    };
    for a in attempts.iter().filter(|a| breaker_on || a.ok) {
        let qualified = format!("{}/{}", a.provider, a.model);
        let healthy = attempt_is_healthy(a);
        let due = VIEW.with(|v| {
            let mut view = v.borrow_mut();
            let entry = view.entry(qualified.clone()).or_default();
            let due = must_report(healthy, entry.after_failure, entry.last_report_ms, now_ms);
            if due {
                entry.last_report_ms = Some(now_ms);
                entry.after_failure = false;
            }
            due
        });
        if !due {
            continue;
        }
        let body = json!({
            "healthy": healthy,
            "latency_ms": a.ok.then_some(a.latency_ms),
            "now_ms": now_ms,
            "failures_to_open": policy.failures_to_open,
            "cool_down_ms": policy.cool_down_ms,
        })
        .to_string();
        let result = async {
            let stub = namespace.id_from_name(&qualified)?.get_stub()?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post)
                .with_body(Some(wasm_bindgen::JsValue::from_str(&body)));
            let req = Request::new_with_init("https://circuit/report", &init)?;
            let mut resp = stub.fetch_with_request(req).await?;
            resp.json::<Shared>().await
        }
        .await;
        match result {
            Ok(shared) => VIEW.with(|v| {
                let mut view = v.borrow_mut();
                let entry = view.entry(qualified).or_default();
                entry.state = shared.state;
                entry.latency = match (entry.latency, shared.latency) {
                    (Some(mine), Some(theirs)) => Some(mine.newer(theirs)),
                    (mine, theirs) => mine.or(theirs),
                };
            }),
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
    let pairs: Vec<(String, String)> = headers
        .entries()
        .filter(|(k, _)| k.contains("ratelimit"))
        .collect();
    let reading = crate::capacity::reading_from_headers(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        now_ms,
    );
    CAPACITY.with(|c| {
        let mut c = c.borrow_mut();
        c.entry(provider.to_owned()).or_default().sent(now_ms);
        if let Some(r) = reading {
            c.entry(format!("{provider}/{model}"))
                .or_default()
                .observe(r);
        }
    });
}

/// Share of a provider account's rate limit for `model` in use, as far as
/// this isolate knows (0 when unknown): the model's latest reading, or the
/// provider's own request count against `rpm_limit`, whichever is larger.
pub fn capacity_used(provider: &str, model: &str, now_ms: u64, rpm_limit: Option<u32>) -> f64 {
    CAPACITY.with(|c| {
        let mut c = c.borrow_mut();
        let reading = c
            .get_mut(&format!("{provider}/{model}"))
            .map_or(0.0, |l| l.used(now_ms, None));
        let own = c
            .get_mut(provider)
            .map_or(0.0, |l| l.used(now_ms, rpm_limit));
        reading.max(own)
    })
}
