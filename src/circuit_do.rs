//! `CircuitBreaker` Durable Object: the shared state of one provider+model's
//! circuit (see `breaker.rs`). One instance per `provider/model`, addressed by
//! name. Requests:
//! - `POST /report` `{"healthy": bool, "now_ms": u64, "failures_to_open": u32, "cool_down_ms": u64}`
//!   → applies the outcome, persists, answers the new state;
//! - `GET /state` → the state.

use std::cell::RefCell;

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use crate::breaker::{BreakerPolicy, BreakerState};

const STATE_KEY: &str = "breaker";

#[durable_object(fetch)]
pub struct CircuitBreaker {
    state: State,
    /// Loaded from storage on first use; storage is the durable copy.
    current: RefCell<Option<BreakerState>>,
}

#[derive(Deserialize)]
struct Report {
    healthy: bool,
    now_ms: u64,
    failures_to_open: u32,
    cool_down_ms: u64,
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
}

impl DurableObject for CircuitBreaker {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            current: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let mut s = self.load().await;
        if req.method() == Method::Post {
            let Ok(report) = req.json::<Report>().await else {
                return Response::error("bad report", 400);
            };
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
            self.state.storage().put(STATE_KEY, s).await?;
        }
        Response::from_json(&s)
    }
}
