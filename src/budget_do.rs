//! `KeyBudget` Durable Object: one per virtual key with limits, the single
//! authority for that key's budgets and rate limits (KV is never one). It runs
//! the pure state machine in `budget.rs` on its own clock and persists the
//! state after every change (the remembered closed reservations one key each,
//! so a save writes what changed, not ~150 KB); an alarm releases
//! reservations whose Worker never settled them.
//!
//! Requests (JSON):
//! - `POST /admit` `{"limits", "admission"}` → `{"reservation": …}` or `{"rejection": …}`
//! - `POST /settle` `{"id", "micros", "tokens"}` → `{"outcome": …}`
//! - `POST /release` `{"id"}` → `{"released": bool}` (another scope refused)
//! - `POST /snapshot` `{"limits"}` → the snapshot
//!
//! A project's (team's) object is the same class under the name
//! `project:<id>`; it holds the spend of all the project's keys.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::json;
use wasm_bindgen::JsValue;
use worker::{
    durable_object, js_sys, DurableObject, Env, ListOptions, Request, Response, Result, State,
};

use crate::budget::{Admission, BudgetState, Closed, Limits};

const STATE_KEY: &str = "budget";
/// Each remembered closed reservation is its own key (`closed:<id>` → JSON),
/// so a save writes the one that changed instead of all of them.
const CLOSED_PREFIX: &str = "closed:";

#[durable_object]
pub struct KeyBudget {
    state: State,
    current: RefCell<Option<BudgetState>>,
    /// The closed-reservation ids that have their own key in storage.
    stored_closed: RefCell<BTreeSet<String>>,
}

#[derive(Deserialize)]
struct AdmitBody {
    limits: Limits,
    admission: Admission,
}

#[derive(Deserialize)]
struct SettleBody {
    id: String,
    micros: u64,
    tokens: u64,
    /// With limits and thresholds, the answer lists the alerts this settle
    /// raised (each fires once per window; the state remembers).
    #[serde(default)]
    limits: Option<Limits>,
    #[serde(default)]
    thresholds: Vec<u8>,
}

#[derive(Deserialize)]
struct ReleaseBody {
    id: String,
}

#[derive(Deserialize)]
struct SnapshotBody {
    limits: Limits,
}

fn now_ms() -> u64 {
    crate::http::now_ms()
}

impl KeyBudget {
    async fn load(&self) -> BudgetState {
        if let Some(s) = self.current.borrow().clone() {
            return s;
        }
        let storage = self.state.storage();
        let stored: Option<BudgetState> = storage.get(STATE_KEY).await.ok().flatten();
        let mut s = stored.unwrap_or_default();
        let mut ids = BTreeSet::new();
        if let Ok(map) = storage
            .list_with_options(ListOptions::new().prefix(CLOSED_PREFIX))
            .await
        {
            let mut entries = Vec::new();
            map.for_each(&mut |value, key| {
                let (Some(key), Some(json)) = (key.as_string(), value.as_string()) else {
                    return;
                };
                if let (Some(id), Ok(c)) = (
                    key.strip_prefix(CLOSED_PREFIX),
                    serde_json::from_str::<Closed>(&json),
                ) {
                    ids.insert(id.to_owned());
                    entries.push((id.to_owned(), c));
                }
            });
            s.restore_closed(entries);
        }
        *self.stored_closed.borrow_mut() = ids;
        *self.current.borrow_mut() = Some(s.clone());
        s
    }

    /// Writes the closed reservations that are new since the last save and
    /// deletes the ones the state forgot.
    async fn save_closed(&self, s: &BudgetState) -> Result<()> {
        let storage = self.state.storage();
        let (added, removed) = {
            let stored = self.stored_closed.borrow();
            let added = js_sys::Object::new();
            let mut any = false;
            for (id, c) in s.closed().iter().filter(|(id, _)| !stored.contains(*id)) {
                let json = serde_json::to_string(c)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?;
                js_sys::Reflect::set(
                    &added,
                    &JsValue::from_str(&format!("{CLOSED_PREFIX}{id}")),
                    &JsValue::from_str(&json),
                )?;
                any = true;
            }
            let removed: Vec<String> = stored
                .iter()
                .filter(|id| !s.closed().contains_key(*id))
                .map(|id| format!("{CLOSED_PREFIX}{id}"))
                .collect();
            (any.then_some(added), removed)
        };
        if let Some(added) = added {
            storage.put_multiple_raw(added).await?;
        }
        if !removed.is_empty() {
            storage.delete_multiple(removed).await?;
        }
        *self.stored_closed.borrow_mut() = s.closed().keys().cloned().collect();
        Ok(())
    }

    /// Persists, then makes sure an alarm will release the next expiring
    /// reservation. The output gate holds the response until the write is
    /// durable, so an answer never describes state that could be lost.
    async fn save(&self, s: BudgetState) -> Result<()> {
        let next = s.next_expiry();
        // The in-memory copy first: it is what the next request reads.
        *self.current.borrow_mut() = Some(s.clone());
        self.save_closed(&s).await?;
        self.state.storage().put(STATE_KEY, &s).await?;
        if let Some(at) = next {
            let at = i64::try_from(at).unwrap_or(i64::MAX);
            let current = self.state.storage().get_alarm().await.ok().flatten();
            if current.is_none_or(|c| c > at) {
                self.state.storage().set_alarm(at).await?;
            }
        }
        Ok(())
    }
}

impl DurableObject for KeyBudget {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            current: RefCell::new(None),
            stored_closed: RefCell::new(BTreeSet::new()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        // Read the body BEFORE taking the state: awaiting the body is not
        // storage I/O, so the input gate would let other requests in between
        // and they would admit against a stale copy (lost reservations).
        // From here to `save` only storage is awaited, which the gate covers.
        let text = req.text().await?;
        let mut s = self.load().await;
        // Reservations past their expiry are released on every access, not
        // only by the alarm: under `wrangler dev` a killed runtime loses the
        // pending alarm (the e2e reset test shows it), and nothing may hold a
        // budget past its expiry. Admit/settle/release save below; a snapshot
        // saves only when this changed something.
        let expired_now = !s.expire(now_ms()).is_empty();
        match path.as_str() {
            "/admit" => {
                let Ok(body) = serde_json::from_str::<AdmitBody>(&text) else {
                    return Response::error("bad admit", 400);
                };
                let outcome = s.admit(now_ms(), &body.limits, body.admission);
                self.save(s).await?;
                match outcome {
                    Ok(r) => Response::from_json(&json!({ "reservation": r })),
                    Err(r) => Response::from_json(&json!({ "rejection": r })),
                }
            }
            "/settle" => {
                let Ok(body) = serde_json::from_str::<SettleBody>(&text) else {
                    return Response::error("bad settle", 400);
                };
                let now = now_ms();
                let outcome = s.settle(now, &body.id, body.micros, body.tokens);
                let alerts = match &body.limits {
                    Some(limits) if !body.thresholds.is_empty() => {
                        s.thresholds_crossed(now, limits, &body.thresholds)
                    }
                    _ => Vec::new(),
                };
                self.save(s).await?;
                Response::from_json(&json!({ "outcome": format!("{outcome:?}"), "alerts": alerts }))
            }
            "/release" => {
                let Ok(body) = serde_json::from_str::<ReleaseBody>(&text) else {
                    return Response::error("bad release", 400);
                };
                let released = s.release(now_ms(), &body.id);
                self.save(s).await?;
                Response::from_json(&json!({ "released": released }))
            }
            "/snapshot" => {
                let Ok(body) = serde_json::from_str::<SnapshotBody>(&text) else {
                    return Response::error("bad snapshot", 400);
                };
                let snapshot = s.snapshot(now_ms(), &body.limits);
                if expired_now {
                    self.save(s).await?;
                }
                Response::from_json(&snapshot)
            }
            _ => Response::error("not found", 404),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let mut s = self.load().await;
        s.expire(now_ms());
        self.save(s).await?;
        Response::ok("")
    }
}
