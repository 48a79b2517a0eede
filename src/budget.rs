//! Per-key budgets and rate limits: the pure, deterministic state machine that
//! a key's Durable Object runs (a team or project parent runs another one with
//! its own limits; a request needs both to admit it).
//!
//! Nothing here does I/O or reads a clock. The Durable Object passes `now_ms`
//! (milliseconds since the Unix epoch), persists [`BudgetState`] (serde) after
//! every mutating call and before it answers, and keeps its alarm at
//! [`BudgetState::next_expiry`], calling [`BudgetState::expire`] when it fires.
//! The state is bounded: at most [`MAX_OPEN_RESERVATIONS`] open reservations,
//! [`CLOSED_MEMORY`] remembered closed ones, 61 one-second rate buckets and two
//! day and two month windows — a few hundred KB of JSON at worst, so keep it in
//! SQLite-backed storage (the key-value API caps a value at 128 KiB).
//!
//! ## Reserve → settle
//!
//! [`BudgetState::admit`] is one atomic check-and-reserve: it rejects the
//! request if committed spend + open reservations + this request's worst case
//! would pass any budget, or if RPM/TPM would be passed, and otherwise records
//! a reservation of the worst case. Because the check counts open reservations,
//! committed spend never passes a budget as long as worst cases are true upper
//! bounds (I3): with $0.90 of $1.00 spent and $0.03 worst cases, at most three
//! requests are in flight at once.
//!
//! [`BudgetState::settle`] replaces a reservation by the real cost, on every
//! terminal path (success, error, timeout, client abort, cache hit — a cache
//! hit settles 0). It is idempotent: the ids of closed reservations are
//! remembered ([`CLOSED_MEMORY`] of them, for [`CLOSED_MEMORY_MS`]), and a
//! second settle is a no-op. A reservation that is never settled (the Worker
//! died) expires at `expires_at_ms`: it is released, charging nothing, so it
//! stops blocking (I5) and a key cannot be locked out by failures. A settle
//! that arrives after expiry — or for an id the state never saw or has
//! forgotten — is still counted, once: the spend happened. Late spend goes to
//! the window the reservation was admitted in while that window (or the one
//! before it) is kept, otherwise to the current one. A settle larger than its
//! reservation is counted in full and reported as `over_reservation`; that is
//! the only way committed spend can pass a budget (by at most one request's
//! excess).
//!
//! Choose `ttl_ms` longer than a request can live: the request deadline plus
//! the 30 s `waitUntil` grace, plus margin.
//!
//! ## Windows
//!
//! Day and month budgets are calendar windows in a fixed UTC offset
//! (`time_zone_offset_minutes`, −720 to +840). DST-aware time zones are out of
//! scope (no tz database in the Worker); an operator in a DST zone picks one
//! offset. Spend is kept per window, keyed by the window's start in UTC ms;
//! changing the offset starts fresh windows. RPM and TPM are sliding windows of
//! one-second buckets: an admitted request counts for between 60 and 61
//! seconds (never less than a minute), its reserved tokens for TPM until it
//! settles, then its real tokens. RPM and TPM are independent: a request
//! rejected by either consumes neither.
//!
//! ## Rejections: 402 or 429
//!
//! - Spend and token budgets (day, month, lifetime) → **402** `budget_exceeded`
//!   when committed spend leaves no room for this request, with
//!   `retry_after_secs`/`resets_at_ms` at the window's reset (none for
//!   lifetime). 402 because retrying does not help before the reset, and
//!   OpenAI/Anthropic SDKs retry 429s automatically but never 402s.
//! - The same budgets when the room is only *held by requests in flight* →
//!   **429** `budget_held_by_requests_in_flight`, retry after the earliest of
//!   those reservations must have settled or expired (capped at
//!   [`IN_FLIGHT_RETRY_CAP_SECS`]): the condition is transient.
//! - RPM and TPM → **429** `rate_limit_exceeded` with the seconds until enough
//!   of the window has passed.
//! - A request whose worst case alone exceeds a whole budget or the TPM limit
//!   → 402 (budgets) or 429 (TPM) `request_exceeds_limit`, with no retry:
//!   only a smaller `max_tokens` or prompt helps.
//! - When several limits fail, the one that frees up last is reported.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pricing::MicroUsd;

pub const DAY_MS: i64 = 86_400_000;
/// Open reservations per key; beyond it requests get 429.
pub const MAX_OPEN_RESERVATIONS: usize = 1_000;
/// Closed reservation ids remembered for idempotent settles.
pub const CLOSED_MEMORY: usize = 1_000;
/// How long a closed reservation id is remembered.
pub const CLOSED_MEMORY_MS: u64 = 3_600_000;
/// Longest `Retry-After` for a budget held by requests in flight.
pub const IN_FLIGHT_RETRY_CAP_SECS: u64 = 60;
/// Alert thresholds when the operator configures none.
pub const DEFAULT_THRESHOLDS: [u8; 4] = [50, 80, 90, 100];
pub const MIN_OFFSET_MINUTES: i32 = -12 * 60;
pub const MAX_OFFSET_MINUTES: i32 = 14 * 60;

/// A request counts in the RPM/TPM window while `now_sec <= sec + 60`.
const RATE_WINDOW_SECS: u64 = 60;

/// A key's (or a parent's) limits. `None` = unlimited. Money is micro-USD
/// (`10_000_000` = $10) so the admin API never passes floats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub micro_usd_per_day: Option<MicroUsd>,
    pub micro_usd_per_month: Option<MicroUsd>,
    pub micro_usd_lifetime: Option<MicroUsd>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
    /// Requests per minute (0 admits nothing).
    pub rpm: Option<u32>,
    /// Tokens per minute (reserved worst case until settled, then actual).
    pub tpm: Option<u64>,
    /// The fixed UTC offset of the day and month windows.
    pub time_zone_offset_minutes: i32,
}

impl Limits {
    /// Whether any budget is in money (an unpriced model cannot be bounded).
    pub fn has_usd_budget(&self) -> bool {
        self.micro_usd_per_day.is_some()
            || self.micro_usd_per_month.is_some()
            || self.micro_usd_lifetime.is_some()
    }

    /// Every problem at once; `at` prefixes messages (e.g. `keys.abc.limits`).
    pub fn validate(&self, at: &str) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if !(MIN_OFFSET_MINUTES..=MAX_OFFSET_MINUTES).contains(&self.time_zone_offset_minutes) {
            errors.push(format!(
                "{at}.time_zone_offset_minutes: must be between {MIN_OFFSET_MINUTES} and {MAX_OFFSET_MINUTES}"
            ));
        }
        // $1e9 / 1e15 tokens: far beyond any real budget, far from overflow.
        for (name, v, max) in [
            (
                "micro_usd_per_day",
                self.micro_usd_per_day,
                1_000_000_000_000_000,
            ),
            (
                "micro_usd_per_month",
                self.micro_usd_per_month,
                1_000_000_000_000_000,
            ),
            (
                "micro_usd_lifetime",
                self.micro_usd_lifetime,
                1_000_000_000_000_000,
            ),
            ("tokens_per_day", self.tokens_per_day, 1_000_000_000_000_000),
            (
                "tokens_per_month",
                self.tokens_per_month,
                1_000_000_000_000_000,
            ),
            ("tpm", self.tpm, 1_000_000_000_000_000),
        ] {
            if v.is_some_and(|v| v > max) {
                errors.push(format!("{at}.{name}: at most {max}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Which limit a rejection or an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    UsdPerDay,
    UsdPerMonth,
    UsdLifetime,
    TokensPerDay,
    TokensPerMonth,
    Rpm,
    Tpm,
    /// Too many open reservations ([`MAX_OPEN_RESERVATIONS`]).
    InFlight,
    /// The reservation id was already used and closed.
    DuplicateReservation,
}

impl LimitKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UsdPerDay => "usd_per_day",
            Self::UsdPerMonth => "usd_per_month",
            Self::UsdLifetime => "usd_lifetime",
            Self::TokensPerDay => "tokens_per_day",
            Self::TokensPerMonth => "tokens_per_month",
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
            Self::InFlight => "in_flight",
            Self::DuplicateReservation => "duplicate_reservation",
        }
    }

    fn is_usd(&self) -> bool {
        matches!(
            self,
            Self::UsdPerDay | Self::UsdPerMonth | Self::UsdLifetime
        )
    }

    fn name(&self) -> &'static str {
        match self {
            Self::UsdPerDay => "daily spend budget",
            Self::UsdPerMonth => "monthly spend budget",
            Self::UsdLifetime => "lifetime spend budget",
            Self::TokensPerDay => "daily token budget",
            Self::TokensPerMonth => "monthly token budget",
            Self::Rpm => "requests-per-minute limit",
            Self::Tpm => "tokens-per-minute limit",
            Self::InFlight => "limit of requests in flight",
            Self::DuplicateReservation => "reservation",
        }
    }

    fn amount(&self, v: u64) -> String {
        if self.is_usd() {
            fmt_usd(v)
        } else {
            format!("{v} tokens")
        }
    }
}

/// Why a request was rejected; see the module docs for the statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Committed spend leaves no room: 402 until the window resets.
    Exhausted,
    /// Room exists but open reservations hold it: 429, soon.
    HeldByRequestsInFlight,
    /// The request's worst case alone exceeds the whole limit: never fits.
    ExceedsLimit,
    /// RPM/TPM: 429 until the window slides.
    RateLimited,
    TooManyInFlight,
    Duplicate,
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// Unique per request (the gateway request id); retrying `admit` with the
    /// same id while it is open returns the same reservation.
    pub reservation_id: String,
    pub worst_case_micros: MicroUsd,
    pub worst_case_tokens: u64,
    pub ttl_ms: u64,
}

/// An open reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub micros: MicroUsd,
    pub tokens: u64,
    pub admitted_at_ms: u64,
    pub expires_at_ms: u64,
    /// The day and month windows it was admitted in (UTC ms).
    pub day_start_ms: i64,
    pub month_start_ms: i64,
}

/// A refusal, ready to render as the OpenAI error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub limit: LimitKind,
    pub reason: Reason,
    /// 402, 429 (or 409 for a reused reservation id, a caller bug).
    pub status: u16,
    /// For the `Retry-After` header; `None` when waiting does not help.
    pub retry_after_secs: Option<u64>,
    /// When the limit frees up (window reset, reservation expiry, bucket
    /// leaving the minute); `None` when it never does by itself.
    pub resets_at_ms: Option<u64>,
    /// Names the limit and when it resets; safe to show the client.
    pub message: String,
}

impl Rejection {
    /// OpenAI `error.code`.
    pub fn code(&self) -> &'static str {
        match self.reason {
            Reason::Exhausted => "budget_exceeded",
            Reason::HeldByRequestsInFlight => "budget_held_by_requests_in_flight",
            Reason::ExceedsLimit => "request_exceeds_limit",
            Reason::RateLimited => "rate_limit_exceeded",
            Reason::TooManyInFlight => "too_many_requests_in_flight",
            Reason::Duplicate => "duplicate_request",
        }
    }

    /// OpenAI `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self.status {
            402 => "insufficient_quota",
            429 => "rate_limit_error",
            _ => "invalid_request_error",
        }
    }

    /// The same refusal, worded for a parent budget: the state machine
    /// speaks of "this key", but a project's object refuses for all its keys.
    pub fn for_project(mut self, project_id: &str) -> Self {
        let m = self
            .message
            .replace("This key's", "Its")
            .replace("this key's", "its")
            .replace("This key has", "It has");
        self.message = format!("Project '{project_id}' (this key's team budget): {m}");
        self
    }

    /// Sort key: permanent first, then the longest wait.
    fn wait_rank(&self) -> (bool, u64) {
        (
            self.retry_after_secs.is_none(),
            self.retry_after_secs.unwrap_or(0),
        )
    }
}

/// What a settle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum SettleOutcome {
    /// The reservation was open: replaced by the actual cost.
    Settled {
        reserved_micros: MicroUsd,
        actual_micros: MicroUsd,
        /// Actual cost or tokens above the reservation (a worst case that
        /// was not an upper bound).
        over_reservation: bool,
    },
    /// The reservation had expired; the actual cost is counted now.
    LateAfterExpiry { actual_micros: MicroUsd },
    /// Never seen (or forgotten); the actual cost is counted in the current
    /// windows.
    Unknown { actual_micros: MicroUsd },
    /// Settled before: nothing counted.
    AlreadySettled,
}

/// Spend in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    pub micros: MicroUsd,
    pub tokens: u64,
}

impl Spend {
    fn add(&mut self, micros: MicroUsd, tokens: u64) {
        self.micros = self.micros.saturating_add(micros);
        self.tokens = self.tokens.saturating_add(tokens);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClosedHow {
    Settled,
    Expired,
    /// Withdrawn before it went upstream (another scope refused the request).
    Released,
}

/// A remembered closed reservation (what makes a second settle a no-op).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    at_ms: u64,
    how: ClosedHow,
    admitted_at_ms: u64,
    reserved_tokens: u64,
    day_start_ms: i64,
    month_start_ms: i64,
}

/// One second of the RPM/TPM window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RateBucket {
    sec: u64,
    requests: u64,
    tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FiredAlerts {
    limit: LimitKind,
    window_start_ms: i64,
    fired: Vec<u8>,
}

/// A threshold crossed for the first time in its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub limit: LimitKind,
    pub threshold_pct: u8,
    /// Committed spend (micro-USD) or tokens in the window.
    pub spent: u64,
    pub limit_value: u64,
    /// `None` for lifetime budgets.
    pub window_start_ms: Option<u64>,
    pub resets_at_ms: Option<u64>,
}

/// One budget window for the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSnapshot {
    /// `None` for lifetime.
    pub start_ms: Option<u64>,
    pub resets_at_ms: Option<u64>,
    pub spent_micros: MicroUsd,
    pub reserved_micros: MicroUsd,
    pub limit_micros: Option<MicroUsd>,
    pub remaining_micros: Option<MicroUsd>,
    pub spent_tokens: u64,
    pub reserved_tokens: u64,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
}

/// Spend, reservations and rates for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSnapshot {
    pub now_ms: u64,
    pub day: WindowSnapshot,
    pub month: WindowSnapshot,
    pub lifetime: WindowSnapshot,
    pub requests_last_minute: u64,
    pub tokens_last_minute: u64,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub open_reservations: Vec<Reservation>,
    /// Reservations that expired without a settle (Workers that died).
    pub expired_unsettled: u64,
}

impl BudgetSnapshot {
    /// The largest share of any money or token budget that is spent or
    /// reserved (0 when there is none; may pass 1). The `budget` routing
    /// strategy moves requests to cheaper tiers as it grows.
    pub fn used_fraction(&self) -> f64 {
        [&self.day, &self.month, &self.lifetime]
            .iter()
            .flat_map(|w| {
                let money = w
                    .limit_micros
                    .filter(|l| *l > 0)
                    .map(|l| w.spent_micros.saturating_add(w.reserved_micros) as f64 / l as f64);
                let tokens = w
                    .limit_tokens
                    .filter(|l| *l > 0)
                    .map(|l| w.spent_tokens.saturating_add(w.reserved_tokens) as f64 / l as f64);
                [money, tokens]
            })
            .flatten()
            .fold(0.0, f64::max)
    }
}

/// What the Durable Object persists; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetState {
    /// Committed spend per day window, keyed by the window's start (UTC ms):
    /// the current and the previous day.
    days: BTreeMap<i64, Spend>,
    /// Likewise per calendar month.
    months: BTreeMap<i64, Spend>,
    lifetime: Spend,
    open: BTreeMap<String, Reservation>,
    /// Not serialized: up to [`CLOSED_MEMORY`] entries would make every save
    /// rewrite ~150 KB, so the Durable Object stores them one per key
    /// ([`BudgetState::closed`], [`BudgetState::restore_closed`]). Older
    /// states that still carry them load as before.
    #[serde(skip_serializing)]
    closed: BTreeMap<String, Closed>,
    /// Ascending by `sec`.
    rate: Vec<RateBucket>,
    alerts: Vec<FiredAlerts>,
    /// The offset last seen with the limits (settle and expire get none).
    offset_minutes: i32,
    expired_unsettled: u64,
}

fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn to_u64(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

fn offset_ms(offset_minutes: i32) -> i64 {
    i64::from(offset_minutes) * 60_000
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// `[start, end)` in UTC ms of the calendar day containing `now_ms` at this
/// UTC offset.
pub fn day_window(now_ms: u64, offset_minutes: i32) -> (i64, i64) {
    let off = offset_ms(offset_minutes);
    let day = to_i64(now_ms).saturating_add(off).div_euclid(DAY_MS);
    (day * DAY_MS - off, (day + 1) * DAY_MS - off)
}

/// `[start, end)` in UTC ms of the calendar month containing `now_ms` at this
/// UTC offset.
pub fn month_window(now_ms: u64, offset_minutes: i32) -> (i64, i64) {
    let off = offset_ms(offset_minutes);
    let day = to_i64(now_ms).saturating_add(off).div_euclid(DAY_MS);
    let (y, m, _) = civil_from_days(day);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (
        days_from_civil(y, m, 1) * DAY_MS - off,
        days_from_civil(ny, nm, 1) * DAY_MS - off,
    )
}

/// `$1.00`, `$0.0015`, `$12.345678`.
fn fmt_usd(micros: MicroUsd) -> String {
    let frac = format!("{:06}", micros % 1_000_000);
    let trimmed = frac.trim_end_matches('0');
    let shown = if trimmed.len() < 2 {
        frac.get(..2).unwrap_or("00")
    } else {
        trimmed
    };
    format!("${}.{shown}", micros / 1_000_000)
}

/// `2026-11-23 00:00 UTC+02:00`, in the limits' offset.
fn fmt_time(ms: u64, offset_minutes: i32) -> String {
    let local = to_i64(ms).saturating_add(offset_ms(offset_minutes));
    let (y, m, d) = civil_from_days(local.div_euclid(DAY_MS));
    let in_day = local.rem_euclid(DAY_MS) / 60_000;
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let off = offset_minutes.unsigned_abs();
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC{sign}{:02}:{:02}",
        in_day / 60,
        in_day % 60,
        off / 60,
        off % 60
    )
}

/// Whole seconds from `now` until `at`, at least 1.
fn secs_until(now_ms: u64, at_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms).div_ceil(1_000).max(1)
}

fn bucket_expiry_ms(sec: u64) -> u64 {
    sec.saturating_add(RATE_WINDOW_SECS + 1)
        .saturating_mul(1_000)
}

/// One budget to check at admission.
struct BudgetCheck {
    kind: LimitKind,
    limit: u64,
    committed: u64,
    reserved: u64,
    /// Earliest expiry among the reservations counted in `reserved`.
    earliest_expiry: Option<u64>,
    /// Window reset; `None` for lifetime.
    resets_at_ms: Option<u64>,
}

impl BudgetCheck {
    fn evaluate(&self, want: u64, now_ms: u64, offset_minutes: i32) -> Option<Rejection> {
        let k = self.kind;
        let what = if k.is_usd() { "cost" } else { "use" };
        if want > self.limit {
            return Some(Rejection {
                limit: k,
                reason: Reason::ExceedsLimit,
                status: 402,
                retry_after_secs: None,
                resets_at_ms: None,
                message: format!(
                    "This request could {what} up to {}, more than this key's whole {} of {}; lower max_tokens or shorten the prompt.",
                    k.amount(want),
                    k.name(),
                    k.amount(self.limit)
                ),
            });
        }
        if self.committed.saturating_add(want) > self.limit {
            let when = match self.resets_at_ms {
                Some(at) => format!("It resets at {}.", fmt_time(at, offset_minutes)),
                None => "It does not reset; an administrator can raise it.".to_owned(),
            };
            return Some(Rejection {
                limit: k,
                reason: Reason::Exhausted,
                status: 402,
                retry_after_secs: self.resets_at_ms.map(|at| secs_until(now_ms, at)),
                resets_at_ms: self.resets_at_ms,
                message: format!(
                    "This key's {} of {} is used up ({} spent; this request could {what} up to {}). {when}",
                    k.name(),
                    k.amount(self.limit),
                    k.amount(self.committed),
                    k.amount(want)
                ),
            });
        }
        if self
            .committed
            .saturating_add(self.reserved)
            .saturating_add(want)
            > self.limit
        {
            let at = self
                .earliest_expiry
                .unwrap_or(now_ms.saturating_add(IN_FLIGHT_RETRY_CAP_SECS * 1_000));
            let secs = secs_until(now_ms, at).min(IN_FLIGHT_RETRY_CAP_SECS);
            return Some(Rejection {
                limit: k,
                reason: Reason::HeldByRequestsInFlight,
                status: 429,
                retry_after_secs: Some(secs),
                resets_at_ms: Some(at),
                message: format!(
                    "This key's {} of {} is held by requests in flight ({} spent, {} reserved; this request could {what} up to {}). Retry in {secs} s.",
                    k.name(),
                    k.amount(self.limit),
                    k.amount(self.committed),
                    k.amount(self.reserved),
                    k.amount(want)
                ),
            });
        }
        None
    }
}

impl BudgetState {
    /// The remembered closed reservations, by id (stored apart from the state).
    pub fn closed(&self) -> &BTreeMap<String, Closed> {
        &self.closed
    }

    /// Puts back closed reservations stored apart from the state.
    pub fn restore_closed(&mut self, entries: impl IntoIterator<Item = (String, Closed)>) {
        self.closed.extend(entries);
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// Atomic check-and-reserve; see the module docs.
    pub fn admit(
        &mut self,
        now_ms: u64,
        limits: &Limits,
        request: Admission,
    ) -> Result<Reservation, Rejection> {
        self.offset_minutes = limits.time_zone_offset_minutes;
        self.expire(now_ms);
        self.prune(now_ms);
        if let Some(r) = self.open.get(&request.reservation_id) {
            return Ok(r.clone());
        }
        if self.closed.contains_key(&request.reservation_id) {
            return Err(Rejection {
                limit: LimitKind::DuplicateReservation,
                reason: Reason::Duplicate,
                status: 409,
                retry_after_secs: None,
                resets_at_ms: None,
                message: "This request id was already used.".to_owned(),
            });
        }
        if self.open.len() >= MAX_OPEN_RESERVATIONS {
            let at = self.next_expiry().unwrap_or(now_ms.saturating_add(1_000));
            let secs = secs_until(now_ms, at).min(IN_FLIGHT_RETRY_CAP_SECS);
            return Err(Rejection {
                limit: LimitKind::InFlight,
                reason: Reason::TooManyInFlight,
                status: 429,
                retry_after_secs: Some(secs),
                resets_at_ms: Some(at),
                message: format!(
                    "This key has {MAX_OPEN_RESERVATIONS} requests in flight, the most it may have. Retry in {secs} s."
                ),
            });
        }
        let off = limits.time_zone_offset_minutes;
        let (day_start, day_end) = day_window(now_ms, off);
        let (month_start, month_end) = month_window(now_ms, off);

        let mut rejections: Vec<Rejection> = self
            .budget_checks(limits, (day_start, day_end), (month_start, month_end))
            .iter()
            .filter_map(|check| {
                let want = if check.kind.is_usd() {
                    request.worst_case_micros
                } else {
                    request.worst_case_tokens
                };
                check.evaluate(want, now_ms, off)
            })
            .collect();
        rejections.extend(self.rate_checks(now_ms, limits, request.worst_case_tokens));
        if let Some(worst) = rejections.into_iter().max_by_key(Rejection::wait_rank) {
            return Err(worst);
        }

        let reservation = Reservation {
            id: request.reservation_id.clone(),
            micros: request.worst_case_micros,
            tokens: request.worst_case_tokens,
            admitted_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(request.ttl_ms.max(1)),
            day_start_ms: day_start,
            month_start_ms: month_start,
        };
        if let Some(b) = self.bucket_at(now_ms / 1_000) {
            b.requests = b.requests.saturating_add(1);
            b.tokens = b.tokens.saturating_add(request.worst_case_tokens);
        }
        self.open
            .insert(request.reservation_id, reservation.clone());
        Ok(reservation)
    }

    /// The budgets configured in `limits`, with what is committed and reserved
    /// in the current windows.
    fn budget_checks(
        &self,
        limits: &Limits,
        (day_start, day_end): (i64, i64),
        (month_start, month_end): (i64, i64),
    ) -> Vec<BudgetCheck> {
        #[derive(Clone, Copy)]
        enum Scope {
            Day,
            Month,
            Lifetime,
        }
        let day = self.days.get(&day_start).copied().unwrap_or_default();
        let month = self.months.get(&month_start).copied().unwrap_or_default();
        let mut checks = Vec::new();
        for (kind, limit, committed, scope, resets) in [
            (
                LimitKind::UsdPerDay,
                limits.micro_usd_per_day,
                day.micros,
                Scope::Day,
                Some(day_end),
            ),
            (
                LimitKind::UsdPerMonth,
                limits.micro_usd_per_month,
                month.micros,
                Scope::Month,
                Some(month_end),
            ),
            (
                LimitKind::UsdLifetime,
                limits.micro_usd_lifetime,
                self.lifetime.micros,
                Scope::Lifetime,
                None,
            ),
            (
                LimitKind::TokensPerDay,
                limits.tokens_per_day,
                day.tokens,
                Scope::Day,
                Some(day_end),
            ),
            (
                LimitKind::TokensPerMonth,
                limits.tokens_per_month,
                month.tokens,
                Scope::Month,
                Some(month_end),
            ),
        ] {
            let Some(limit) = limit else { continue };
            let mut reserved = 0u64;
            let mut earliest_expiry: Option<u64> = None;
            for r in self.open.values() {
                let in_scope = match scope {
                    Scope::Day => r.day_start_ms == day_start,
                    Scope::Month => r.month_start_ms == month_start,
                    Scope::Lifetime => true,
                };
                let v = if kind.is_usd() { r.micros } else { r.tokens };
                if !in_scope || v == 0 {
                    continue;
                }
                reserved = reserved.saturating_add(v);
                earliest_expiry =
                    Some(earliest_expiry.map_or(r.expires_at_ms, |e| e.min(r.expires_at_ms)));
            }
            checks.push(BudgetCheck {
                kind,
                limit,
                committed,
                reserved,
                earliest_expiry,
                resets_at_ms: resets.map(to_u64),
            });
        }
        checks
    }

    /// RPM and TPM, each on its own.
    fn rate_checks(&self, now_ms: u64, limits: &Limits, want_tokens: u64) -> Vec<Rejection> {
        let now_sec = now_ms / 1_000;
        let live: Vec<&RateBucket> = self
            .rate
            .iter()
            .filter(|b| b.sec.saturating_add(RATE_WINDOW_SECS) >= now_sec)
            .collect();
        let mut out = Vec::new();
        // When would `used - freed + want <= limit` hold, freeing oldest first?
        let free_at = |pick: &dyn Fn(&RateBucket) -> u64, used: u64, want: u64, limit: u64| {
            let mut freed = 0u64;
            for b in &live {
                freed = freed.saturating_add(pick(b));
                if used.saturating_sub(freed).saturating_add(want) <= limit {
                    return bucket_expiry_ms(b.sec);
                }
            }
            bucket_expiry_ms(now_sec)
        };
        if let Some(rpm) = limits.rpm {
            let used: u64 = live.iter().map(|b| b.requests).sum();
            if rpm == 0 {
                out.push(Rejection {
                    limit: LimitKind::Rpm,
                    reason: Reason::ExceedsLimit,
                    status: 429,
                    retry_after_secs: None,
                    resets_at_ms: None,
                    message: "This key's limit is 0 requests per minute; it accepts no requests."
                        .to_owned(),
                });
            } else if used.saturating_add(1) > u64::from(rpm) {
                let at = free_at(&|b| b.requests, used, 1, u64::from(rpm));
                let secs = secs_until(now_ms, at);
                out.push(Rejection {
                    limit: LimitKind::Rpm,
                    reason: Reason::RateLimited,
                    status: 429,
                    retry_after_secs: Some(secs),
                    resets_at_ms: Some(at),
                    message: format!(
                        "This key's limit of {rpm} requests per minute is reached. Retry in {secs} s."
                    ),
                });
            }
        }
        if let Some(tpm) = limits.tpm {
            let used: u64 = live.iter().map(|b| b.tokens).sum();
            if want_tokens > tpm {
                out.push(Rejection {
                    limit: LimitKind::Tpm,
                    reason: Reason::ExceedsLimit,
                    status: 429,
                    retry_after_secs: None,
                    resets_at_ms: None,
                    message: format!(
                        "This request could use up to {want_tokens} tokens, more than this key's whole limit of {tpm} tokens per minute; lower max_tokens or shorten the prompt."
                    ),
                });
            } else if used.saturating_add(want_tokens) > tpm {
                let at = free_at(&|b| b.tokens, used, want_tokens, tpm);
                let secs = secs_until(now_ms, at);
                out.push(Rejection {
                    limit: LimitKind::Tpm,
                    reason: Reason::RateLimited,
                    status: 429,
                    retry_after_secs: Some(secs),
                    resets_at_ms: Some(at),
                    message: format!(
                        "This key's limit of {tpm} tokens per minute is reached ({used} used in the last minute; this request could use up to {want_tokens}). Retry in {secs} s."
                    ),
                });
            }
        }
        out
    }

    /// The bucket for this second, created in order.
    fn bucket_at(&mut self, sec: u64) -> Option<&mut RateBucket> {
        let i = match self.rate.binary_search_by_key(&sec, |b| b.sec) {
            Ok(i) => i,
            Err(i) => {
                self.rate.insert(
                    i,
                    RateBucket {
                        sec,
                        requests: 0,
                        tokens: 0,
                    },
                );
                i
            }
        };
        self.rate.get_mut(i)
    }

    fn existing_bucket(&mut self, sec: u64) -> Option<&mut RateBucket> {
        self.rate.iter_mut().find(|b| b.sec == sec)
    }

    /// Adds spend to the window a reservation was admitted in while that window
    /// (or the one after it) is current, else to the current window.
    fn charge(&mut self, now_ms: u64, day_start: i64, month_start: i64, micros: u64, tokens: u64) {
        let off = self.offset_minutes;
        let (cur_day, _) = day_window(now_ms, off);
        let (cur_month, _) = month_window(now_ms, off);
        let prev_month = month_window(to_u64(cur_month.saturating_sub(1)), off).0;
        let day = if day_start >= cur_day - DAY_MS {
            day_start
        } else {
            cur_day
        };
        let month = if month_start >= prev_month {
            month_start
        } else {
            cur_month
        };
        self.days.entry(day).or_default().add(micros, tokens);
        self.months.entry(month).or_default().add(micros, tokens);
        self.lifetime.add(micros, tokens);
    }

    /// Replaces a reservation by the real cost; idempotent (see the module
    /// docs for late and unknown settles).
    pub fn settle(
        &mut self,
        now_ms: u64,
        reservation_id: &str,
        actual_micros: MicroUsd,
        actual_tokens: u64,
    ) -> SettleOutcome {
        self.prune(now_ms);
        let closed = |how, admitted_at_ms, reserved_tokens, day_start_ms, month_start_ms| Closed {
            at_ms: now_ms,
            how,
            admitted_at_ms,
            reserved_tokens,
            day_start_ms,
            month_start_ms,
        };
        if let Some(r) = self.open.remove(reservation_id) {
            self.charge(
                now_ms,
                r.day_start_ms,
                r.month_start_ms,
                actual_micros,
                actual_tokens,
            );
            if let Some(b) = self.existing_bucket(r.admitted_at_ms / 1_000) {
                b.tokens = b
                    .tokens
                    .saturating_sub(r.tokens)
                    .saturating_add(actual_tokens);
            }
            self.remember(
                reservation_id,
                closed(
                    ClosedHow::Settled,
                    r.admitted_at_ms,
                    r.tokens,
                    r.day_start_ms,
                    r.month_start_ms,
                ),
            );
            return SettleOutcome::Settled {
                reserved_micros: r.micros,
                actual_micros,
                over_reservation: actual_micros > r.micros || actual_tokens > r.tokens,
            };
        }
        match self.closed.get(reservation_id).cloned() {
            Some(c) if c.how == ClosedHow::Settled => SettleOutcome::AlreadySettled,
            Some(c) => {
                self.charge(
                    now_ms,
                    c.day_start_ms,
                    c.month_start_ms,
                    actual_micros,
                    actual_tokens,
                );
                if let Some(b) = self.existing_bucket(c.admitted_at_ms / 1_000) {
                    b.tokens = b.tokens.saturating_add(actual_tokens);
                }
                // (A released id is never settled by the gateway; if one is,
                // the spend happened and is counted like a late settle.)
                if c.how == ClosedHow::Expired {
                    self.expired_unsettled = self.expired_unsettled.saturating_sub(1);
                }
                self.remember(
                    reservation_id,
                    Closed {
                        at_ms: now_ms,
                        how: ClosedHow::Settled,
                        ..c
                    },
                );
                SettleOutcome::LateAfterExpiry { actual_micros }
            }
            None => {
                let off = self.offset_minutes;
                let (day, _) = day_window(now_ms, off);
                let (month, _) = month_window(now_ms, off);
                self.charge(now_ms, day, month, actual_micros, actual_tokens);
                if let Some(b) = self.bucket_at(now_ms / 1_000) {
                    b.tokens = b.tokens.saturating_add(actual_tokens);
                }
                self.remember(
                    reservation_id,
                    closed(ClosedHow::Settled, now_ms, 0, day, month),
                );
                SettleOutcome::Unknown { actual_micros }
            }
        }
    }

    /// Withdraws an open reservation that never went upstream — a parent
    /// (team/project) budget refused the request after this key admitted it.
    /// Nothing is charged and the request leaves the RPM/TPM window, so a
    /// refusal elsewhere costs this scope nothing. Idempotent; returns whether
    /// a reservation was open.
    pub fn release(&mut self, now_ms: u64, reservation_id: &str) -> bool {
        self.prune(now_ms);
        let Some(r) = self.open.remove(reservation_id) else {
            return false;
        };
        if let Some(b) = self.existing_bucket(r.admitted_at_ms / 1_000) {
            b.requests = b.requests.saturating_sub(1);
            b.tokens = b.tokens.saturating_sub(r.tokens);
        }
        self.remember(
            reservation_id,
            Closed {
                at_ms: now_ms,
                how: ClosedHow::Released,
                admitted_at_ms: r.admitted_at_ms,
                reserved_tokens: r.tokens,
                day_start_ms: r.day_start_ms,
                month_start_ms: r.month_start_ms,
            },
        );
        true
    }

    fn remember(&mut self, id: &str, c: Closed) {
        self.closed.insert(id.to_owned(), c);
        if self.closed.len() > CLOSED_MEMORY {
            let mut by_age: Vec<(u64, String)> = self
                .closed
                .iter()
                .map(|(k, c)| (c.at_ms, k.clone()))
                .collect();
            by_age.sort();
            let excess = self.closed.len() - CLOSED_MEMORY;
            for (_, k) in by_age.into_iter().take(excess) {
                self.closed.remove(&k);
            }
        }
    }

    /// Releases reservations past their expiry (charging nothing); returns
    /// their ids. The Durable Object's alarm calls this; `admit` does too.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let expired: Vec<String> = self
            .open
            .values()
            .filter(|r| r.expires_at_ms <= now_ms)
            .map(|r| r.id.clone())
            .collect();
        for id in &expired {
            if let Some(r) = self.open.remove(id) {
                if let Some(b) = self.existing_bucket(r.admitted_at_ms / 1_000) {
                    b.tokens = b.tokens.saturating_sub(r.tokens);
                }
                self.expired_unsettled = self.expired_unsettled.saturating_add(1);
                self.remember(
                    id,
                    Closed {
                        at_ms: now_ms,
                        how: ClosedHow::Expired,
                        admitted_at_ms: r.admitted_at_ms,
                        reserved_tokens: r.tokens,
                        day_start_ms: r.day_start_ms,
                        month_start_ms: r.month_start_ms,
                    },
                );
            }
        }
        self.prune(now_ms);
        expired
    }

    /// When the alarm should next fire.
    pub fn next_expiry(&self) -> Option<u64> {
        self.open.values().map(|r| r.expires_at_ms).min()
    }

    /// Drops windows older than the previous one, rate buckets out of the
    /// minute, and closed ids past their memory.
    fn prune(&mut self, now_ms: u64) {
        let off = self.offset_minutes;
        let (cur_day, _) = day_window(now_ms, off);
        let (cur_month, _) = month_window(now_ms, off);
        let prev_month = month_window(to_u64(cur_month.saturating_sub(1)), off).0;
        self.days.retain(|start, _| *start >= cur_day - DAY_MS);
        self.months.retain(|start, _| *start >= prev_month);
        let now_sec = now_ms / 1_000;
        self.rate
            .retain(|b| b.sec.saturating_add(RATE_WINDOW_SECS) >= now_sec);
        self.closed
            .retain(|_, c| c.at_ms.saturating_add(CLOSED_MEMORY_MS) > now_ms);
    }

    /// Thresholds (percent of a budget's committed spend) crossed for the
    /// first time in their window; each fires once per window. Pass
    /// [`DEFAULT_THRESHOLDS`] when the operator set none.
    pub fn thresholds_crossed(
        &mut self,
        now_ms: u64,
        limits: &Limits,
        thresholds: &[u8],
    ) -> Vec<Alert> {
        self.offset_minutes = limits.time_zone_offset_minutes;
        let off = limits.time_zone_offset_minutes;
        let (day_start, day_end) = day_window(now_ms, off);
        let (month_start, month_end) = month_window(now_ms, off);
        let day = self.days.get(&day_start).copied().unwrap_or_default();
        let month = self.months.get(&month_start).copied().unwrap_or_default();
        let windows = [
            (
                LimitKind::UsdPerDay,
                limits.micro_usd_per_day,
                day.micros,
                Some((day_start, day_end)),
            ),
            (
                LimitKind::UsdPerMonth,
                limits.micro_usd_per_month,
                month.micros,
                Some((month_start, month_end)),
            ),
            (
                LimitKind::UsdLifetime,
                limits.micro_usd_lifetime,
                self.lifetime.micros,
                None,
            ),
            (
                LimitKind::TokensPerDay,
                limits.tokens_per_day,
                day.tokens,
                Some((day_start, day_end)),
            ),
            (
                LimitKind::TokensPerMonth,
                limits.tokens_per_month,
                month.tokens,
                Some((month_start, month_end)),
            ),
        ];
        let mut wanted: Vec<u8> = thresholds.iter().copied().filter(|t| *t > 0).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut alerts = Vec::new();
        for (kind, limit, spent, window) in windows {
            let Some(limit) = limit else { continue };
            let start = window.map_or(0, |w| w.0);
            let idx = match self.alerts.iter().position(|a| a.limit == kind) {
                Some(i) => i,
                None => {
                    self.alerts.push(FiredAlerts {
                        limit: kind,
                        window_start_ms: start,
                        fired: Vec::new(),
                    });
                    self.alerts.len() - 1
                }
            };
            let Some(record) = self.alerts.get_mut(idx) else {
                continue;
            };
            if record.window_start_ms != start {
                record.window_start_ms = start;
                record.fired.clear();
            }
            for &t in &wanted {
                let crossed = u128::from(spent) * 100 >= u128::from(t) * u128::from(limit)
                    && (limit > 0 || spent > 0);
                if crossed && !record.fired.contains(&t) {
                    record.fired.push(t);
                    alerts.push(Alert {
                        limit: kind,
                        threshold_pct: t,
                        spent,
                        limit_value: limit,
                        window_start_ms: window.map(|w| to_u64(w.0)),
                        resets_at_ms: window.map(|w| to_u64(w.1)),
                    });
                }
            }
        }
        alerts
    }

    /// Spent, reserved and remaining per window, for the admin API.
    pub fn snapshot(&self, now_ms: u64, limits: &Limits) -> BudgetSnapshot {
        let off = limits.time_zone_offset_minutes;
        let (day_start, day_end) = day_window(now_ms, off);
        let (month_start, month_end) = month_window(now_ms, off);
        let open: Vec<Reservation> = self
            .open
            .values()
            .filter(|r| r.expires_at_ms > now_ms)
            .cloned()
            .collect();
        let reserved = |f: &dyn Fn(&Reservation) -> bool| {
            open.iter()
                .filter(|r| f(r))
                .fold((0u64, 0u64), |(m, t), r| {
                    (m.saturating_add(r.micros), t.saturating_add(r.tokens))
                })
        };
        let window = |spent: Spend,
                      (res_m, res_t): (u64, u64),
                      limit_micros: Option<u64>,
                      limit_tokens: Option<u64>,
                      bounds: Option<(i64, i64)>| WindowSnapshot {
            start_ms: bounds.map(|b| to_u64(b.0)),
            resets_at_ms: bounds.map(|b| to_u64(b.1)),
            spent_micros: spent.micros,
            reserved_micros: res_m,
            limit_micros,
            remaining_micros: limit_micros
                .map(|l| l.saturating_sub(spent.micros.saturating_add(res_m))),
            spent_tokens: spent.tokens,
            reserved_tokens: res_t,
            limit_tokens,
            remaining_tokens: limit_tokens
                .map(|l| l.saturating_sub(spent.tokens.saturating_add(res_t))),
        };
        let now_sec = now_ms / 1_000;
        let live = self
            .rate
            .iter()
            .filter(|b| b.sec.saturating_add(RATE_WINDOW_SECS) >= now_sec);
        let (requests, tokens) = live.fold((0u64, 0u64), |(r, t), b| {
            (r.saturating_add(b.requests), t.saturating_add(b.tokens))
        });
        BudgetSnapshot {
            now_ms,
            day: window(
                self.days.get(&day_start).copied().unwrap_or_default(),
                reserved(&|r| r.day_start_ms == day_start),
                limits.micro_usd_per_day,
                limits.tokens_per_day,
                Some((day_start, day_end)),
            ),
            month: window(
                self.months.get(&month_start).copied().unwrap_or_default(),
                reserved(&|r| r.month_start_ms == month_start),
                limits.micro_usd_per_month,
                limits.tokens_per_month,
                Some((month_start, month_end)),
            ),
            lifetime: window(
                self.lifetime,
                reserved(&|_| true),
                limits.micro_usd_lifetime,
                None,
                None,
            ),
            requests_last_minute: requests,
            tokens_last_minute: tokens,
            rpm: limits.rpm,
            tpm: limits.tpm,
            open_reservations: open,
            expired_unsettled: self.expired_unsettled,
        }
    }

    /// The least money left in any configured spend budget after committed
    /// spend and open reservations (the "budget left" response header);
    /// `None` when no spend budget is set.
    pub fn remaining_micros(&self, now_ms: u64, limits: &Limits) -> Option<MicroUsd> {
        let s = self.snapshot(now_ms, limits);
        [s.day, s.month, s.lifetime]
            .iter()
            .filter_map(|w| w.remaining_micros)
            .min()
    }

    /// Open reservations (including any past expiry not yet swept).
    pub fn open_reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.open.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USD: u64 = 1_000_000;
    const CENT: u64 = 10_000;
    const TTL: u64 = 180_000;

    /// Milliseconds at a UTC date and time.
    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> u64 {
        to_u64(days_from_civil(y, mo, d) * DAY_MS + h * 3_600_000 + mi * 60_000)
    }

    fn t0() -> u64 {
        at(2026, 11, 22, 12, 0)
    }

    fn adm(id: &str, micros: u64, tokens: u64) -> Admission {
        Admission {
            reservation_id: id.to_owned(),
            worst_case_micros: micros,
            worst_case_tokens: tokens,
            ttl_ms: TTL,
        }
    }

    fn daily(usd_micros: u64) -> Limits {
        Limits {
            micro_usd_per_day: Some(usd_micros),
            ..Limits::default()
        }
    }

    /// Commits `micros` through an admitted and settled reservation.
    fn spend(s: &mut BudgetState, now: u64, limits: &Limits, id: &str, micros: u64) {
        s.admit(now, limits, adm(id, micros, 0)).unwrap();
        assert!(matches!(
            s.settle(now, id, micros, 0),
            SettleOutcome::Settled { .. }
        ));
    }

    #[test]
    fn b1_at_most_three_of_fifty_fit_and_committed_stays_within_budget() {
        let limits = daily(USD);
        let mut s = BudgetState::new();
        let now = t0();
        spend(&mut s, now, &limits, "earlier", 90 * CENT);
        let mut admitted = Vec::new();
        for i in 0..50 {
            match s.admit(now + i, &limits, adm(&format!("r{i}"), 3 * CENT, 100)) {
                Ok(r) => admitted.push(r.id),
                Err(e) => {
                    assert_eq!(e.limit, LimitKind::UsdPerDay);
                    assert!([402, 429].contains(&e.status), "{e:?}");
                    // In flight, not exhausted: the client may retry soon.
                    assert_eq!(e.reason, Reason::HeldByRequestsInFlight);
                    assert_eq!(e.status, 429);
                    let secs = e.retry_after_secs.unwrap();
                    assert!((1..=IN_FLIGHT_RETRY_CAP_SECS).contains(&secs));
                    assert!(
                        e.message.contains("daily spend budget of $1.00"),
                        "{}",
                        e.message
                    );
                }
            }
        }
        assert_eq!(admitted.len(), 3);
        for id in &admitted {
            s.settle(now + 100, id, 3 * CENT, 100);
        }
        let snap = s.snapshot(now + 100, &limits);
        assert_eq!(snap.day.spent_micros, 99 * CENT);
        assert!(snap.day.spent_micros <= USD);
        assert_eq!(snap.day.reserved_micros, 0);
        // Now it is exhausted for the day: 402 until midnight UTC.
        let e = s
            .admit(now + 200, &limits, adm("late", 3 * CENT, 0))
            .unwrap_err();
        assert_eq!((e.status, e.reason), (402, Reason::Exhausted));
        assert_eq!(e.resets_at_ms, Some(at(2026, 11, 23, 0, 0)));
        assert_eq!(e.retry_after_secs, Some(12 * 3_600));
        assert!(
            e.message.contains("resets at 2026-11-23 00:00 UTC+00:00"),
            "{}",
            e.message
        );
        assert_eq!(e.code(), "budget_exceeded");
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn committed_never_passes_any_budget_when_settles_stay_within_reservations() {
        let limits = Limits {
            micro_usd_per_day: Some(3 * USD),
            micro_usd_per_month: Some(20 * USD),
            micro_usd_lifetime: Some(50 * USD),
            tokens_per_day: Some(2_000_000),
            ..Limits::default()
        };
        let mut rng = Lcg(42);
        let mut s = BudgetState::new();
        let mut now = t0();
        let mut open: Vec<(String, u64, u64)> = Vec::new();
        for i in 0..20_000u64 {
            now += rng.next(120_000);
            if rng.next(3) == 0 && !open.is_empty() {
                let k = usize::try_from(rng.next(open.len() as u64)).unwrap();
                let (id, m, t) = open.swap_remove(k);
                s.settle(now, &id, rng.next(m + 1), rng.next(t + 1));
            } else {
                let id = format!("q{i}");
                let (m, t) = (rng.next(50 * CENT), rng.next(100_000));
                if s.admit(now, &limits, adm(&id, m, t)).is_ok() {
                    open.push((id, m, t));
                }
            }
            // Expired reservations are gone from the state; forget them here.
            open.retain(|(id, _, _)| s.open.contains_key(id));
            let snap = s.snapshot(now, &limits);
            assert!(snap.day.spent_micros + snap.day.reserved_micros <= 3 * USD);
            assert!(snap.month.spent_micros + snap.month.reserved_micros <= 20 * USD);
            assert!(snap.lifetime.spent_micros + snap.lifetime.reserved_micros <= 50 * USD);
            assert!(snap.day.spent_tokens + snap.day.reserved_tokens <= 2_000_000);
        }
        assert!(
            s.lifetime.micros > 30 * USD,
            "the budgets were exercised: {}",
            s.lifetime.micros
        );
    }

    #[test]
    fn unsettled_reservations_expire_and_stop_blocking() {
        let limits = daily(USD);
        let mut s = BudgetState::new();
        let now = t0();
        s.admit(now, &limits, adm("a", 60 * CENT, 0)).unwrap();
        s.admit(now + 5, &limits, adm("b", 40 * CENT, 0)).unwrap();
        assert_eq!(s.next_expiry(), Some(now + TTL));
        let e = s.admit(now + 10, &limits, adm("c", CENT, 0)).unwrap_err();
        assert_eq!(e.reason, Reason::HeldByRequestsInFlight);
        assert_eq!(e.resets_at_ms, Some(now + TTL));
        assert_eq!(s.expire(now + TTL - 1), Vec::<String>::new());
        assert_eq!(s.expire(now + TTL), vec!["a".to_owned()]);
        assert_eq!(s.next_expiry(), Some(now + 5 + TTL));
        // admit sweeps on its own, without the alarm.
        s.admit(now + TTL + 5, &limits, adm("c", 90 * CENT, 0))
            .unwrap();
        assert_eq!(s.open.len(), 1);
        let snap = s.snapshot(now + TTL + 5, &limits);
        assert_eq!((snap.day.spent_micros, snap.expired_unsettled), (0, 2));
    }

    #[test]
    fn a_thousand_failed_requests_never_lock_the_key_out() {
        let limits = Limits {
            micro_usd_per_day: Some(USD),
            tokens_per_day: Some(100_000),
            tpm: Some(50_000),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        let mut now = t0();
        for i in 0..1_000 {
            now += 10;
            let id = format!("f{i}");
            s.admit(now, &limits, adm(&id, 50 * CENT, 40_000)).unwrap();
            assert!(matches!(
                s.settle(now + 5, &id, 0, 0),
                SettleOutcome::Settled { .. }
            ));
        }
        let snap = s.snapshot(now + 10, &limits);
        assert_eq!(snap.day.spent_micros, 0);
        assert_eq!(snap.day.reserved_micros, 0);
        assert!(snap.open_reservations.is_empty());
        assert_eq!(snap.tokens_last_minute, 0);
        s.admit(now + 10, &limits, adm("ok", USD, 50_000)).unwrap();
    }

    #[test]
    fn settle_is_idempotent_and_late_or_unknown_settles_count_once() {
        let limits = daily(USD);
        let mut s = BudgetState::new();
        let now = t0();
        s.admit(now, &limits, adm("a", 10 * CENT, 0)).unwrap();
        assert_eq!(
            s.settle(now + 1, "a", 7 * CENT, 0),
            SettleOutcome::Settled {
                reserved_micros: 10 * CENT,
                actual_micros: 7 * CENT,
                over_reservation: false
            }
        );
        assert_eq!(
            s.settle(now + 2, "a", 7 * CENT, 0),
            SettleOutcome::AlreadySettled
        );
        assert_eq!(
            s.settle(now + 3, "a", 9 * CENT, 0),
            SettleOutcome::AlreadySettled
        );
        assert_eq!(s.lifetime.micros, 7 * CENT);

        // Expired, then settled late: counted once, in its window.
        s.admit(now, &limits, adm("b", 10 * CENT, 0)).unwrap();
        s.expire(now + TTL);
        assert_eq!(
            s.settle(now + TTL + 1, "b", 4 * CENT, 0),
            SettleOutcome::LateAfterExpiry {
                actual_micros: 4 * CENT
            }
        );
        assert_eq!(
            s.settle(now + TTL + 2, "b", 4 * CENT, 0),
            SettleOutcome::AlreadySettled
        );
        assert_eq!(s.lifetime.micros, 11 * CENT);
        assert_eq!(s.expired_unsettled, 0);

        // Never seen (state lost, or forgotten): counted once.
        assert_eq!(
            s.settle(now + TTL + 3, "ghost", 2 * CENT, 0),
            SettleOutcome::Unknown {
                actual_micros: 2 * CENT
            }
        );
        assert_eq!(
            s.settle(now + TTL + 4, "ghost", 2 * CENT, 0),
            SettleOutcome::AlreadySettled
        );
        assert_eq!(
            s.snapshot(now + TTL + 5, &limits).day.spent_micros,
            13 * CENT
        );

        // A settle above its reservation counts in full and says so.
        s.admit(now + TTL + 6, &limits, adm("c", CENT, 10)).unwrap();
        assert_eq!(
            s.settle(now + TTL + 7, "c", 2 * CENT, 10),
            SettleOutcome::Settled {
                reserved_micros: CENT,
                actual_micros: 2 * CENT,
                over_reservation: true
            }
        );
        // An id that was used cannot reserve again.
        let e = s
            .admit(now + TTL + 8, &limits, adm("c", CENT, 0))
            .unwrap_err();
        assert_eq!((e.status, e.limit), (409, LimitKind::DuplicateReservation));
    }

    #[test]
    fn admitting_an_open_id_again_returns_the_same_reservation() {
        let limits = daily(10 * CENT);
        let mut s = BudgetState::new();
        let first = s.admit(t0(), &limits, adm("a", 6 * CENT, 0)).unwrap();
        let again = s.admit(t0() + 50, &limits, adm("a", 6 * CENT, 0)).unwrap();
        assert_eq!(first, again);
        assert_eq!(s.snapshot(t0() + 50, &limits).day.reserved_micros, 6 * CENT);
    }

    #[test]
    fn rpm_ten_rejects_the_eleventh_until_the_minute_has_passed() {
        let limits = Limits {
            rpm: Some(10),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        let start = t0();
        for i in 0..10 {
            let id = format!("r{i}");
            s.admit(start + i * 1_000, &limits, adm(&id, 0, 0)).unwrap();
            s.settle(start + i * 1_000 + 1, &id, 0, 0);
        }
        let e = s
            .admit(start + 9_500, &limits, adm("r10", 0, 0))
            .unwrap_err();
        assert_eq!(
            (e.status, e.limit, e.reason),
            (429, LimitKind::Rpm, Reason::RateLimited)
        );
        assert_eq!(e.code(), "rate_limit_exceeded");
        // The first request counts until 61 s after its second began.
        assert_eq!(e.resets_at_ms, Some(start + 61_000));
        assert_eq!(e.retry_after_secs, Some(52));
        assert!(
            e.message.contains("10 requests per minute"),
            "{}",
            e.message
        );
        assert!(s.admit(start + 60_999, &limits, adm("r10", 0, 0)).is_err());
        // At the window plus one second it passes.
        s.admit(start + 61_000, &limits, adm("r10", 0, 0)).unwrap();
        // Rejections consumed nothing: exactly one slot freed, one used.
        assert!(s.admit(start + 61_001, &limits, adm("r11", 0, 0)).is_err());
        assert_eq!(s.snapshot(start + 61_001, &limits).requests_last_minute, 10);
    }

    #[test]
    fn every_admitted_request_counts_for_at_least_a_minute() {
        let limits = Limits {
            rpm: Some(1),
            ..Limits::default()
        };
        for offset in [0, 1, 500, 999] {
            let mut s = BudgetState::new();
            let t = t0() + offset;
            s.admit(t, &limits, adm("a", 0, 0)).unwrap();
            assert!(s.admit(t + 59_999, &limits, adm("b", 0, 0)).is_err());
            let e = s.admit(t + 59_999, &limits, adm("b", 0, 0)).unwrap_err();
            assert!(e.resets_at_ms.unwrap() >= t + 60_000);
            assert!(e.resets_at_ms.unwrap() <= t + 61_000);
            s.admit(e.resets_at_ms.unwrap(), &limits, adm("b", 0, 0))
                .unwrap();
        }
    }

    #[test]
    fn project_rejections_name_the_project() {
        let limits = Limits {
            rpm: Some(1),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        s.admit(t0(), &limits, adm("a", 0, 0)).unwrap();
        let e = s
            .admit(t0() + 1, &limits, adm("b", 0, 0))
            .unwrap_err()
            .for_project("search");
        assert!(
            e.message
                .starts_with("Project 'search' (this key's team budget): Its limit of 1 requests per minute is reached."),
            "{}",
            e.message
        );
        assert_eq!((e.status, e.code()), (429, "rate_limit_exceeded"));
    }

    #[test]
    fn used_fraction_is_the_tightest_budget() {
        let limits = Limits {
            micro_usd_per_day: Some(1_000),
            micro_usd_lifetime: Some(100_000),
            tokens_per_month: Some(10_000),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        assert_eq!(s.snapshot(t0(), &limits).used_fraction(), 0.0);
        s.admit(t0(), &limits, adm("a", 300, 100)).unwrap();
        s.settle(t0() + 1, "a", 300, 100);
        s.admit(t0() + 2, &limits, adm("b", 200, 100)).unwrap();
        // Day: (300 spent + 200 reserved) / 1000 beats lifetime and tokens.
        assert_eq!(s.snapshot(t0() + 3, &limits).used_fraction(), 0.5);
        assert_eq!(s.snapshot(t0(), &Limits::default()).used_fraction(), 0.0);
    }

    #[test]
    fn release_withdraws_a_reservation_without_charge_or_rate_use() {
        let limits = Limits {
            rpm: Some(1),
            tpm: Some(1_000),
            micro_usd_per_day: Some(100),
            ..Limits::default()
        };
        let now = t0();
        let mut s = BudgetState::new();
        s.admit(now, &limits, adm("a", 60, 900)).unwrap();
        assert!(s.release(now + 5, "a"));
        assert_eq!(s.open_reservations().count(), 0);
        // Its RPM slot, TPM tokens and budget room are all free again.
        s.admit(now + 10, &limits, adm("b", 100, 1_000)).unwrap();
        assert_eq!(
            s.settle(now + 20, "b", 100, 1_000),
            SettleOutcome::Settled {
                reserved_micros: 100,
                actual_micros: 100,
                over_reservation: false
            }
        );
        // Idempotent, and a released id cannot be admitted again.
        assert!(!s.release(now + 30, "a"));
        assert_eq!(
            s.admit(now + 40, &limits, adm("a", 0, 0))
                .unwrap_err()
                .status,
            409
        );
        assert_eq!(s.snapshot(now + 50, &limits).expired_unsettled, 0);
    }

    #[test]
    fn rpm_and_tpm_do_not_interfere() {
        let limits = Limits {
            rpm: Some(10),
            tpm: Some(1_000),
            ..Limits::default()
        };
        let now = t0();
        // TPM rejects while RPM has room, and the rejection uses no RPM slot.
        let mut s = BudgetState::new();
        s.admit(now, &limits, adm("big", 0, 900)).unwrap();
        let e = s.admit(now + 1, &limits, adm("big2", 0, 200)).unwrap_err();
        assert_eq!((e.limit, e.status), (LimitKind::Tpm, 429));
        assert!(
            e.message.contains("1000 tokens per minute"),
            "{}",
            e.message
        );
        for i in 0..9 {
            s.admit(now + 2 + i, &limits, adm(&format!("small{i}"), 0, 10))
                .unwrap();
        }
        assert_eq!(s.snapshot(now + 20, &limits).requests_last_minute, 10);
        // RPM rejects while TPM has room, and the rejection uses no tokens.
        let e = s
            .admit(now + 20, &limits, adm("eleventh", 0, 1))
            .unwrap_err();
        assert_eq!(e.limit, LimitKind::Rpm);
        assert_eq!(s.snapshot(now + 20, &limits).tokens_last_minute, 990);
        // Settling returns unused tokens to the minute.
        s.settle(now + 30, "big", 0, 100);
        assert_eq!(s.snapshot(now + 30, &limits).tokens_last_minute, 190);
        // With RPM alone, tokens are not limited; with TPM alone, requests are not.
        let mut only_rpm = BudgetState::new();
        let rpm_only = Limits {
            rpm: Some(2),
            ..Limits::default()
        };
        only_rpm
            .admit(now, &rpm_only, adm("x", 0, 1_000_000))
            .unwrap();
        only_rpm
            .admit(now, &rpm_only, adm("y", 0, 1_000_000))
            .unwrap();
        let mut only_tpm = BudgetState::new();
        let tpm_only = Limits {
            tpm: Some(1_000),
            ..Limits::default()
        };
        for i in 0..100 {
            only_tpm
                .admit(now, &tpm_only, adm(&format!("z{i}"), 0, 10))
                .unwrap();
        }
        // A request larger than the whole TPM never fits: no Retry-After.
        let e = only_tpm
            .admit(now + 61_000, &tpm_only, adm("huge", 0, 1_001))
            .unwrap_err();
        assert_eq!((e.reason, e.retry_after_secs), (Reason::ExceedsLimit, None));
    }

    #[test]
    fn tpm_retry_after_waits_for_enough_tokens_to_leave_the_minute() {
        let limits = Limits {
            tpm: Some(1_000),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        let now = t0();
        s.admit(now, &limits, adm("a", 0, 300)).unwrap();
        s.admit(now + 10_000, &limits, adm("b", 0, 300)).unwrap();
        s.admit(now + 20_000, &limits, adm("c", 0, 300)).unwrap();
        // 900 used; 500 more fits only once a and b (600) have left.
        let e = s
            .admit(now + 30_000, &limits, adm("d", 0, 500))
            .unwrap_err();
        assert_eq!(e.resets_at_ms, Some(now + 10_000 + 61_000));
        assert!(s.admit(now + 70_999, &limits, adm("d", 0, 500)).is_err());
        s.admit(now + 71_000, &limits, adm("d", 0, 500)).unwrap();
    }

    #[test]
    fn day_windows_roll_over_at_the_offsets_midnight() {
        // UTC+02:00: the day starts at 22:00 UTC.
        let limits = Limits {
            micro_usd_per_day: Some(USD),
            time_zone_offset_minutes: 120,
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        let before = at(2026, 11, 22, 21, 59);
        spend(&mut s, before, &limits, "a", USD);
        let e = s.admit(before, &limits, adm("b", CENT, 0)).unwrap_err();
        assert_eq!(e.resets_at_ms, Some(at(2026, 11, 22, 22, 0)));
        assert_eq!(e.retry_after_secs, Some(60));
        assert!(
            e.message.contains("resets at 2026-11-23 00:00 UTC+02:00"),
            "{}",
            e.message
        );
        s.admit(at(2026, 11, 22, 22, 0), &limits, adm("b", CENT, 0))
            .unwrap();
        // UTC−05:00: the day starts at 05:00 UTC.
        let west = Limits {
            micro_usd_per_day: Some(USD),
            time_zone_offset_minutes: -300,
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        spend(&mut s, at(2026, 11, 22, 4, 59), &west, "a", USD);
        assert!(s
            .admit(at(2026, 11, 22, 4, 59), &west, adm("b", 1, 0))
            .is_err());
        s.admit(at(2026, 11, 22, 5, 0), &west, adm("b", 1, 0))
            .unwrap();
        assert_eq!(
            day_window(at(2026, 11, 22, 4, 59), -300),
            (
                to_i64(at(2026, 11, 21, 5, 0)),
                to_i64(at(2026, 11, 22, 5, 0))
            )
        );
    }

    #[test]
    fn month_windows_roll_over_at_the_offsets_first_of_the_month() {
        let limits = Limits {
            micro_usd_per_month: Some(USD),
            time_zone_offset_minutes: 60,
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        // 2027-01-31 22:59 UTC is 23:59 local, still January.
        let jan = at(2027, 1, 31, 22, 59);
        spend(&mut s, jan, &limits, "a", USD);
        let e = s.admit(jan, &limits, adm("b", 1, 0)).unwrap_err();
        assert_eq!(e.limit, LimitKind::UsdPerMonth);
        assert_eq!(e.resets_at_ms, Some(at(2027, 1, 31, 23, 0)));
        s.admit(at(2027, 1, 31, 23, 0), &limits, adm("b", 1, 0))
            .unwrap();
        // Leap February and the year's end.
        assert_eq!(
            month_window(at(2028, 2, 29, 12, 0), 0),
            (to_i64(at(2028, 2, 1, 0, 0)), to_i64(at(2028, 3, 1, 0, 0)))
        );
        assert_eq!(
            month_window(at(2026, 12, 31, 23, 30), 0),
            (to_i64(at(2026, 12, 1, 0, 0)), to_i64(at(2027, 1, 1, 0, 0)))
        );
        // 2026-12-31 23:30 UTC is already January 2027 at UTC+01:00.
        assert_eq!(
            month_window(at(2026, 12, 31, 23, 30), 60).0,
            to_i64(at(2026, 12, 31, 23, 0))
        );
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in -800_000..800_000i64 {
            let (y, m, d) = civil_from_days(day);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        assert_eq!(
            fmt_time(at(2026, 11, 22, 23, 5), -330),
            "2026-11-22 17:35 UTC-05:30"
        );
        assert_eq!(fmt_usd(USD), "$1.00");
        assert_eq!(fmt_usd(3 * CENT), "$0.03");
        assert_eq!(fmt_usd(1_500), "$0.0015");
        assert_eq!(fmt_usd(12_345_678), "$12.345678");
    }

    #[test]
    fn spend_that_settles_after_midnight_stays_in_its_day() {
        let limits = daily(USD);
        let mut s = BudgetState::new();
        let evening = at(2026, 11, 22, 23, 59);
        s.admit(evening, &limits, adm("a", 50 * CENT, 0)).unwrap();
        let morning = at(2026, 11, 23, 0, 1);
        s.settle(morning, "a", 40 * CENT, 0);
        let snap = s.snapshot(morning, &limits);
        assert_eq!(snap.day.spent_micros, 0, "the new day starts empty");
        assert_eq!(
            s.days.get(&to_i64(at(2026, 11, 22, 0, 0))).unwrap().micros,
            40 * CENT
        );
        // Spend from an id never seen goes to the current day.
        s.settle(morning, "ghost", CENT, 0);
        assert_eq!(s.snapshot(morning, &limits).day.spent_micros, CENT);
        // Old windows are dropped after a day.
        s.admit(at(2026, 11, 25, 0, 0), &limits, adm("b", 0, 0))
            .unwrap();
        assert!(s.days.keys().all(|k| *k >= to_i64(at(2026, 11, 24, 0, 0))));
    }

    #[test]
    fn thresholds_fire_once_per_window() {
        let limits = Limits {
            micro_usd_per_day: Some(USD),
            micro_usd_lifetime: Some(10 * USD),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        let now = t0();
        assert!(s
            .thresholds_crossed(now, &limits, &DEFAULT_THRESHOLDS)
            .is_empty());
        spend(&mut s, now, &limits, "a", 55 * CENT);
        let fired = |a: Vec<Alert>| {
            a.iter()
                .map(|a| (a.limit, a.threshold_pct))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fired(s.thresholds_crossed(now, &limits, &DEFAULT_THRESHOLDS)),
            vec![(LimitKind::UsdPerDay, 50)]
        );
        assert!(s
            .thresholds_crossed(now + 1, &limits, &DEFAULT_THRESHOLDS)
            .is_empty());
        spend(&mut s, now + 2, &limits, "b", 40 * CENT);
        let alerts = s.thresholds_crossed(now + 3, &limits, &DEFAULT_THRESHOLDS);
        assert_eq!(
            fired(alerts.clone()),
            vec![(LimitKind::UsdPerDay, 80), (LimitKind::UsdPerDay, 90)]
        );
        assert_eq!(alerts[0].spent, 95 * CENT);
        assert_eq!(alerts[0].resets_at_ms, Some(at(2026, 11, 23, 0, 0)));
        spend(&mut s, now + 4, &limits, "c", 5 * CENT);
        assert_eq!(
            fired(s.thresholds_crossed(now + 5, &limits, &DEFAULT_THRESHOLDS)),
            vec![(LimitKind::UsdPerDay, 100)]
        );
        assert!(s
            .thresholds_crossed(now + 6, &limits, &DEFAULT_THRESHOLDS)
            .is_empty());
        // The next day starts over; the lifetime budget does not.
        let tomorrow = at(2026, 11, 23, 12, 0);
        spend(&mut s, tomorrow, &limits, "d", 60 * CENT);
        assert_eq!(
            fired(s.thresholds_crossed(tomorrow, &limits, &DEFAULT_THRESHOLDS)),
            vec![(LimitKind::UsdPerDay, 50)]
        );
        spend(&mut s, tomorrow, &limits, "e", 30 * CENT);
        assert_eq!(
            fired(s.thresholds_crossed(tomorrow, &limits, &[50, 80, 50, 0])),
            vec![(LimitKind::UsdPerDay, 80)]
        );
        // Lifetime: 2.6 of 10 → none yet; at 5.1 the 50 % fires, once.
        spend(&mut s, tomorrow, &limits, "f", 10 * CENT);
        let mut big = BudgetState::new();
        let lt = Limits {
            micro_usd_lifetime: Some(10 * USD),
            ..Limits::default()
        };
        spend(&mut big, now, &lt, "x", 51 * USD / 10);
        assert_eq!(
            fired(big.thresholds_crossed(now, &lt, &DEFAULT_THRESHOLDS)),
            vec![(LimitKind::UsdLifetime, 50)]
        );
        assert!(big
            .thresholds_crossed(now + 10 * DAY_MS as u64, &lt, &DEFAULT_THRESHOLDS)
            .is_empty());
    }

    #[test]
    fn the_longest_wait_is_reported_and_permanent_limits_say_so() {
        let limits = Limits {
            micro_usd_per_day: Some(USD),
            micro_usd_lifetime: Some(2 * USD),
            rpm: Some(1),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        let now = t0();
        spend(&mut s, now, &limits, "a", USD);
        // Day exhausted (12 h) and RPM (61 s): the day is reported.
        let e = s.admit(now + 1, &limits, adm("b", CENT, 0)).unwrap_err();
        assert_eq!((e.limit, e.status), (LimitKind::UsdPerDay, 402));
        // Lifetime exhausted: nothing to wait for.
        let mut s = BudgetState::new();
        spend(&mut s, now, &limits, "a", USD);
        spend(&mut s, now + 86_400_000, &limits, "b", USD);
        let e = s
            .admit(now + 2 * 86_400_000, &limits, adm("c", CENT, 0))
            .unwrap_err();
        assert_eq!(
            (e.limit, e.reason, e.status),
            (LimitKind::UsdLifetime, Reason::Exhausted, 402)
        );
        assert_eq!((e.retry_after_secs, e.resets_at_ms), (None, None));
        assert!(e.message.contains("does not reset"), "{}", e.message);
        // A worst case above the whole budget never fits.
        let e = BudgetState::new()
            .admit(now, &daily(USD), adm("d", 2 * USD, 0))
            .unwrap_err();
        assert_eq!(
            (e.reason, e.status, e.retry_after_secs),
            (Reason::ExceedsLimit, 402, None)
        );
        assert!(e.message.contains("lower max_tokens"), "{}", e.message);
        assert_eq!(e.error_type(), "insufficient_quota");
        // RPM 0 admits nothing.
        let zero = Limits {
            rpm: Some(0),
            ..Limits::default()
        };
        assert!(BudgetState::new()
            .admit(now, &zero, adm("e", 0, 0))
            .is_err());
    }

    #[test]
    fn token_budgets_count_reserved_and_committed_tokens() {
        let limits = Limits {
            tokens_per_day: Some(1_000),
            tokens_per_month: Some(1_500),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        let now = t0();
        s.admit(now, &limits, adm("a", 0, 600)).unwrap();
        let e = s.admit(now, &limits, adm("b", 0, 600)).unwrap_err();
        assert_eq!(
            (e.limit, e.reason),
            (LimitKind::TokensPerDay, Reason::HeldByRequestsInFlight)
        );
        assert!(
            e.message.contains("daily token budget of 1000 tokens"),
            "{}",
            e.message
        );
        s.settle(now, "a", 0, 500);
        s.admit(now, &limits, adm("b", 0, 500)).unwrap();
        s.settle(now, "b", 0, 500);
        let e = s.admit(now, &limits, adm("c", 0, 1)).unwrap_err();
        assert_eq!((e.limit, e.status), (LimitKind::TokensPerDay, 402));
        let tomorrow = at(2026, 11, 23, 12, 0);
        s.admit(tomorrow, &limits, adm("c", 0, 500)).unwrap();
        let e = s.admit(tomorrow, &limits, adm("d", 0, 1)).unwrap_err();
        assert_eq!(e.limit, LimitKind::TokensPerMonth);
    }

    #[test]
    fn snapshot_and_remaining() {
        let limits = Limits {
            micro_usd_per_day: Some(USD),
            micro_usd_per_month: Some(5 * USD),
            rpm: Some(100),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        let now = t0();
        spend(&mut s, now, &limits, "a", 30 * CENT);
        s.admit(now + 1, &limits, adm("b", 20 * CENT, 50)).unwrap();
        let snap = s.snapshot(now + 2, &limits);
        assert_eq!(snap.day.spent_micros, 30 * CENT);
        assert_eq!(snap.day.reserved_micros, 20 * CENT);
        assert_eq!(snap.day.remaining_micros, Some(50 * CENT));
        assert_eq!(snap.month.remaining_micros, Some(450 * CENT));
        assert_eq!(snap.lifetime.limit_micros, None);
        assert_eq!(snap.day.start_ms, Some(at(2026, 11, 22, 0, 0)));
        assert_eq!(snap.month.start_ms, Some(at(2026, 11, 1, 0, 0)));
        assert_eq!(snap.month.resets_at_ms, Some(at(2026, 12, 1, 0, 0)));
        assert_eq!(
            (snap.requests_last_minute, snap.tokens_last_minute),
            (2, 50)
        );
        assert_eq!(snap.open_reservations.len(), 1);
        assert_eq!(s.remaining_micros(now + 2, &limits), Some(50 * CENT));
        assert_eq!(s.remaining_micros(now + 2, &Limits::default()), None);
        // The admin view round-trips as JSON.
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["day"]["remaining_micros"], 500_000);
    }

    #[test]
    fn state_survives_persistence_mid_flight() {
        let limits = Limits {
            micro_usd_per_day: Some(USD),
            rpm: Some(5),
            ..Limits::default()
        };
        let mut s = BudgetState::new();
        let now = t0();
        spend(&mut s, now, &limits, "a", 40 * CENT);
        s.admit(now + 1, &limits, adm("b", 50 * CENT, 10)).unwrap();
        s.thresholds_crossed(now + 1, &limits, &DEFAULT_THRESHOLDS);
        s.expire(now + 1);
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("\"closed\""), "closed ids are stored apart");
        let mut restored: BudgetState = serde_json::from_str(&text).unwrap();
        restored.restore_closed(s.closed().iter().map(|(k, v)| (k.clone(), v.clone())));
        assert_eq!(restored, s);
        assert!(
            matches!(
                restored.settle(now + 2, "a", 0, 0),
                SettleOutcome::AlreadySettled
            ),
            "a settle replayed after a reload is still a no-op"
        );
        // A state saved before closed ids were stored apart still loads them.
        let mut legacy = serde_json::to_value(&s).unwrap();
        legacy["closed"] = serde_json::to_value(s.closed()).unwrap();
        let legacy: BudgetState = serde_json::from_value(legacy).unwrap();
        assert_eq!(legacy, s);
        assert!(restored
            .admit(now + 2, &limits, adm("c", 20 * CENT, 0))
            .is_err());
        assert!(matches!(
            restored.settle(now + 3, "b", 10 * CENT, 10),
            SettleOutcome::Settled { .. }
        ));
        restored
            .admit(now + 4, &limits, adm("c", 20 * CENT, 0))
            .unwrap();
        // An empty object is a fresh state (a new key's first load).
        assert_eq!(
            serde_json::from_str::<BudgetState>("{}").unwrap(),
            BudgetState::new()
        );
    }

    #[test]
    fn open_reservations_and_closed_memory_are_bounded() {
        let limits = Limits::default();
        let mut s = BudgetState::new();
        let now = t0();
        for i in 0..MAX_OPEN_RESERVATIONS {
            s.admit(now, &limits, adm(&format!("o{i}"), 0, 0)).unwrap();
        }
        let e = s.admit(now, &limits, adm("one-more", 0, 0)).unwrap_err();
        assert_eq!((e.limit, e.status), (LimitKind::InFlight, 429));
        for i in 0..MAX_OPEN_RESERVATIONS {
            s.settle(now + 1, &format!("o{i}"), 0, 0);
        }
        for i in 0..(CLOSED_MEMORY + 10) {
            let id = format!("n{i}");
            s.admit(now + 2, &limits, adm(&id, 0, 0)).unwrap();
            s.settle(now + 2, &id, 0, 0);
        }
        assert!(s.closed.len() <= CLOSED_MEMORY);
        s.expire(now + CLOSED_MEMORY_MS + 10);
        assert!(s.closed.is_empty());
    }

    #[test]
    fn limits_validate_and_reject_unknown_fields() {
        let ok: Limits = serde_json::from_value(serde_json::json!({
            "micro_usd_per_day": 10_000_000, "rpm": 60, "time_zone_offset_minutes": -300
        }))
        .unwrap();
        assert!(ok.validate("limits").is_ok());
        let bad = Limits {
            time_zone_offset_minutes: 900,
            tpm: Some(u64::MAX),
            ..Limits::default()
        };
        let err = bad.validate("limits").unwrap_err().join("\n");
        assert!(err.contains("limits.time_zone_offset_minutes"), "{err}");
        assert!(err.contains("limits.tpm"), "{err}");
        let unknown = serde_json::from_value::<Limits>(serde_json::json!({"usd_per_day": 10}));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }
}
