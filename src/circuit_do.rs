//! `CircuitBreaker` Durable Object: the shared state of one provider+model's
//! circuit (see `breaker.rs`). One instance per `provider/model`, addressed by
//! name. Requests:
//! - `POST /report` `{"healthy": bool, "latency_ms": u64?, "now_ms": u64, "failures_to_open": u32, "cool_down_ms": u64}`
//!   → applies the outcome, persists, answers the new state (with `latency`);
//! - `GET /state` → the state.
//!
//! It also keeps the link's live latency (`latency.rs`), shared by every
//! isolate for the `latency` routing strategy.

use std::cell::RefCell;

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use crate::breaker::{BreakerPolicy, BreakerState};
use crate::latency::LatencyStat;

const STATE_KEY: &str = "breaker";
const LATENCY_KEY: &str = "latency";

#[durable_object(fetch)]
pub struct CircuitBreaker {
    state: State,
    /// Loaded from storage on first use; storage is the durable copy.
    current: RefCell<Option<BreakerState>>,
    latency: RefCell<Option<Option<LatencyStat>>>,
}

#[derive(Deserialize)]
struct Report {
    healthy: bool,
    now_ms: u64,
    failures_to_open: u32,
    cool_down_ms: u64,
    #[serde(default)]
    latency_ms: Option<u64>,
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
}

impl DurableObject for CircuitBreaker {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            current: RefCell::new(None),
            latency: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // The body first: awaiting it is not storage I/O, so the input gate
        // would let another report in between a load and its write (a lost
        // update). From the loads to the puts only storage is awaited.
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
        if let Some(report) = report {
            let before = s;
            s.record(
                report.healthy,
                report.now_ms,
                BreakerPolicy {
                    failures_to_open: report.failures_to_open,
                    cool_down_ms: report.cool_down_ms,
                },
            );
            // No await between read-modify and this write: the DO's input gate
            // keeps concurrent reports from interleaving.
            *self.current.borrow_mut() = Some(s);
            // A success on a closed circuit changes nothing: skip the write.
            if s != before {
                self.state.storage().put(STATE_KEY, s).await?;
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
        Response::from_json(&answer)
    }
}
