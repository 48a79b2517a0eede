//! `CircuitBreaker` Durable Object: the shared state of one provider+model's
//! circuit (see `breaker.rs`). One instance per `provider/model`, addressed by
//! name. Requests:
//! - `POST /report` `{"healthy": bool, "latency_ms": u64?, "now_ms": u64, "failures_to_open": u32, "cool_down_ms": u64}`
//!   → applies the outcome, persists, answers the new state (with `latency`);
//! - `POST /report` with `"probe": {…}` (a health probe's policy and
//!   outcome, see `health.rs`) → applies it as a probe instead;
//! - `POST /claim` `{"slot_ms": u64}` → `{"granted": bool}`: whether a health
//!   probe may run for that slot (once per slot, however many cron runs ask);
//! - `GET /state` → the state (with `latency` and `probe` statistics).
//!
//! It also keeps the link's live latency (`latency.rs`), shared by every
//! isolate for the `latency` routing strategy.

use std::cell::RefCell;

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use crate::breaker::{BreakerPolicy, BreakerState};
use crate::health::{ProbeOutcome, ProbePolicy, ProbeStats};
use crate::latency::LatencyStat;

const STATE_KEY: &str = "breaker";
const LATENCY_KEY: &str = "latency";
const PROBE_KEY: &str = "probe";

#[durable_object(fetch)]
pub struct CircuitBreaker {
    state: State,
    /// Loaded from storage on first use; storage is the durable copy.
    current: RefCell<Option<BreakerState>>,
    latency: RefCell<Option<Option<LatencyStat>>>,
    probe: RefCell<Option<Option<ProbeStats>>>,
}

/// A health probe's report: its policy and outcome.
#[derive(Deserialize)]
struct ProbeReport {
    failures_to_open: u32,
    window: u32,
    max_error_rate: f64,
    hold_ms: u64,
    outcome: ProbeOutcome,
}

#[derive(Deserialize)]
struct Claim {
    slot_ms: u64,
}

#[derive(Deserialize)]
struct Report {
    healthy: bool,
    now_ms: u64,
    failures_to_open: u32,
    cool_down_ms: u64,
    #[serde(default)]
    latency_ms: Option<u64>,
    #[serde(default)]
    probe: Option<ProbeReport>,
}

impl CircuitBreaker {
    async fn load(&self) -> BreakerState {
        if let Some(s) = *self.current.borrow() {
            return s;
        }
        let stored: Option<BreakerState> = self.state.storage().get(STATE_KEY).await.ok().flatten();
        let s = stored.unwrap_or_default();
        *self.current.borrow_mut() = Some(s);
        s
    }

    async fn load_latency(&self) -> Option<LatencyStat> {
        if let Some(l) = *self.latency.borrow() {
            return l;
        }
        let stored: Option<LatencyStat> =
            self.state.storage().get(LATENCY_KEY).await.ok().flatten();
        *self.latency.borrow_mut() = Some(stored);
        stored
    }

    async fn load_probe(&self) -> Option<ProbeStats> {
        if let Some(p) = self.probe.borrow().clone() {
            return p;
        }
        let stored: Option<ProbeStats> = self.state.storage().get(PROBE_KEY).await.ok().flatten();
        *self.probe.borrow_mut() = Some(stored.clone());
        stored
    }

    /// `POST /claim`: one probe per slot. Load, decide and write with only
    /// storage awaited in between (the input gate serialises claims).
    async fn claim(&self, claim: Claim) -> Result<Response> {
        let mut stats = self.load_probe().await.unwrap_or_default();
        let granted = stats.claim(claim.slot_ms);
        if granted {
            *self.probe.borrow_mut() = Some(Some(stats.clone()));
            self.state.storage().put(PROBE_KEY, stats).await?;
        }
        Response::from_json(&serde_json::json!({ "granted": granted }))
    }
}

impl DurableObject for CircuitBreaker {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            current: RefCell::new(None),
            latency: RefCell::new(None),
            probe: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // The body first: awaiting it is not storage I/O, so the input gate
        // would let another report in between a load and its write (a lost
        // update). From the loads to the puts only storage is awaited.
        if req.method() == Method::Post && req.path().ends_with("/claim") {
            return match req.json::<Claim>().await {
                Ok(c) => self.claim(c).await,
                Err(_) => Response::error("bad claim", 400),
            };
        }
        let report = if req.method() == Method::Post {
            match req.json::<Report>().await {
                Ok(r) => Some(r),
                Err(_) => return Response::error("bad report", 400),
            }
        } else {
            None
        };
        let mut s = self.load().await;
        let mut latency = self.load_latency().await;
        let mut probe = self.load_probe().await;
        if let Some(report) = report {
            let before = s;
            let breaker = BreakerPolicy {
                failures_to_open: report.failures_to_open,
                cool_down_ms: report.cool_down_ms,
            };
            let mut probe_write = None;
            match &report.probe {
                Some(p) => {
                    let stats = probe.get_or_insert_with(ProbeStats::default);
                    crate::health::apply_probe(
                        &mut s,
                        &mut stats.record,
                        report.healthy,
                        report.now_ms,
                        breaker,
                        ProbePolicy {
                            failures_to_open: p.failures_to_open,
                            window: p.window,
                            max_error_rate: p.max_error_rate,
                            hold_ms: p.hold_ms,
                        },
                    );
                    stats.count(&p.outcome, report.now_ms);
                    *self.probe.borrow_mut() = Some(Some(stats.clone()));
                    probe_write = Some(stats.clone());
                }
                None => s.record(report.healthy, report.now_ms, breaker),
            }
            // No await between read-modify and this write: the DO's input gate
            // keeps concurrent reports from interleaving.
            *self.current.borrow_mut() = Some(s);
            // A success on a closed circuit changes nothing: skip the write.
            if s != before {
                self.state.storage().put(STATE_KEY, s).await?;
            }
            if let Some(stats) = probe_write {
                self.state.storage().put(PROBE_KEY, stats).await?;
            }
            if let Some(ms) = report.latency_ms {
                let stat = latency.get_or_insert_with(LatencyStat::default);
                stat.observe(ms, report.now_ms);
                let stat = *stat;
                *self.latency.borrow_mut() = Some(Some(stat));
                self.state.storage().put(LATENCY_KEY, stat).await?;
            }
        }
        let mut answer =
            serde_json::to_value(s).map_err(|e| worker::Error::RustError(e.to_string()))?;
        if let (Some(o), Some(l)) = (answer.as_object_mut(), latency) {
            o.insert(
                "latency".to_owned(),
                serde_json::to_value(l).map_err(|e| worker::Error::RustError(e.to_string()))?,
            );
        }
        if let (Some(o), Some(p)) = (answer.as_object_mut(), probe) {
            o.insert(
                "probe".to_owned(),
                serde_json::to_value(p).map_err(|e| worker::Error::RustError(e.to_string()))?,
            );
        }
        Response::from_json(&answer)
    }
}
