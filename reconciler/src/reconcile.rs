//! The reconcile of one Database, as observe -> plan -> apply: the children are read from the
//! watch caches ([`crate::observe`]), a pure function decides what to do ([`crate::plan`]), and
//! a thin executor does it ([`crate::apply`]). Deletion is handed to [`crate::cleanup`].
//!
//! kube-runtime's `finalizer()` helper is not used for the Apply/Cleanup split: it adds the
//! finalizer with a JSON patch that has no way to report a denial by admission policy as such
//! (`FinalizerUpdateDenied` in status), and it removes the finalizer with a patch over the
//! whole list rather than guarded by the finalizer's index; the two patches here do both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::v1::Database;
use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::{debug, info_span, warn, Instrument};

use crate::apply::{self, ensure_finalizer, publish_all};
use crate::context::{key, report_problem, write_status};
pub use crate::context::{Context, Settings, StatusMemo};
use crate::error::Error;
use crate::observe::{look_up_unknown, observe};
use crate::ownership::{self, REASON_NAME_CONFLICT};
use crate::plan::{self, Plan};
use crate::status;

pub use crate::plan::{REASON_STORAGE_EXPANSION_NOT_ALLOWED, REASON_STORAGE_EXPANSION_PENDING};
pub const REASON_FINALIZER_UPDATE_DENIED: &str = "FinalizerUpdateDenied";

/// How soon to look again when a cache has not caught up with our own write yet.
const CACHE_LAG_REQUEUE: Duration = Duration::from_millis(500);

/// Entry point for the kube `Controller`: one reconcile with metrics, logging span, and the
/// transient/permanent error split.
pub async fn reconcile(db: Arc<Database>, ctx: Arc<Context>) -> Result<Action, Error> {
    // `database`, not `name`: JSON logs already use `name` for the span's own name.
    let span = info_span!(
        "reconcile",
        namespace = %db.namespace().unwrap_or_default(),
        database = %db.name_any(),
        generation = db.metadata.generation.unwrap_or(0),
    );
    async move {
        let started = Instant::now();
        ctx.metrics.in_flight.inc();
        let result = reconcile_inner(&db, &ctx).await;
        ctx.metrics.in_flight.dec();
        match result {
            Ok(action) => {
                ctx.backoff.reset(&key(&db));
                ctx.metrics.observe_reconcile("success", started.elapsed());
                debug!(?action, "reconciled");
                Ok(action)
            }
            Err(err) if err.is_permanent() => {
                ctx.metrics.observe_reconcile("error", started.elapsed());
                ctx.metrics.observe_error(err.metric_label());
                warn!(error = %err, label = err.metric_label(), "permanent reconcile error; not retrying soon");
                report_permanent_error(&db, &ctx, &err).await;
                ctx.backoff.reset(&key(&db));
                Ok(Action::requeue(ctx.settings.permanent_requeue))
            }
            Err(err @ Error::NameConflict(_)) => {
                ctx.metrics.observe_reconcile("error", started.elapsed());
                ctx.metrics.observe_error(err.metric_label());
                warn!(error = %err, "name conflict: leaving foreign objects alone; will retry with backoff");
                report_problem(&db, &ctx, REASON_NAME_CONFLICT, err.to_string()).await;
                Err(err)
            }
            Err(err) => {
                ctx.metrics.observe_reconcile("error", started.elapsed());
                ctx.metrics.observe_error(err.metric_label());
                warn!(error = %err, label = err.metric_label(), "transient reconcile error; will retry with backoff");
                Err(err)
            }
        }
    }
    .instrument(span)
    .await
}

/// Requeue policy for transient errors: per-object exponential backoff with jitter.
pub fn error_policy(db: Arc<Database>, _err: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.backoff.next_delay(&key(&db)))
}

async fn report_permanent_error(db: &Database, ctx: &Context, err: &Error) {
    let reason = match (err, err.api_status().map(|s| s.code)) {
        (Error::FinalizerDenied { .. }, _) => REASON_FINALIZER_UPDATE_DENIED,
        (_, Some(403)) => "Forbidden",
        (_, Some(422)) => "Rejected",
        _ => "ReconcileFailed",
    };
    report_problem(db, ctx, reason, err.summary()).await;
}

async fn reconcile_inner(db: &Database, ctx: &Context) -> Result<Action, Error> {
    if !ctx.stores.ready().await {
        return Err(Error::Stale("the watch caches stopped".to_owned()));
    }
    if db.metadata.deletion_timestamp.is_some() {
        return crate::cleanup::run(db, ctx).await;
    }
    ensure_finalizer(db, ctx).await?;

    let mut observed = observe(db, &ctx.stores);
    if !observed.unknown.is_empty() {
        look_up_unknown(db, &ctx.client, &mut observed).await?;
    }
    let lagging = ctx.expectations.lagging(db, &observed);
    if !lagging.is_empty() {
        debug!(
            ?lagging,
            "caches behind our own writes; looking again shortly"
        );
        return Ok(Action::requeue(CACHE_LAG_REQUEUE));
    }
    let conflicts = observed.conflicts(db);
    if !conflicts.is_empty() {
        return Err(Error::NameConflict(ownership::conflict_message(
            &db.name_any(),
            &conflicts,
        )));
    }
    match plan::plan(db, &observed, &ctx.catalog, &ctx.settings, Timestamp::now())? {
        Plan::Refuse { observation, event } => {
            if let Some(e) = &event {
                warn!(reason = e.reason, message = %e.note, "spec refused, not acting on it");
            }
            publish_all(ctx, db, event.as_slice()).await;
            let new = status::compute(db.status.as_ref(), &observation, Timestamp::now());
            write_status(db, ctx, &new).await?;
            Ok(Action::requeue(ctx.settings.permanent_requeue))
        }
        Plan::Act(actions) => apply::act(db, ctx, *actions).await,
    }
}
