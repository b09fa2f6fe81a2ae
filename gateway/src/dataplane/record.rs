//! The one place a request is counted, at its end, whatever happened to it (pingora's
//! `logging` phase): per route and variant the status class, bytes, latencies, upstream
//! connects, reuses, retries and failures; the canary's kill-switch window; the
//! access-log record. [`begin`] marks a request (or a failover's stable attempt) in
//! flight; [`finish`] turns its outcome into figures; [`rejected`] counts a head refused
//! before routing.
//!
//! Everything is a relaxed store to this worker's own counters or a push to its own
//! bounded queue: no lock, no allocation.

use gateway_common::Variant;

use super::accesslog::{Inline, Record};
use super::io::clock::now_us;
use super::request::{Outcome, RequestCtx, Tally};
use super::route::killswitch::Answer;
use super::route::snapshot::RouteSnap;
use super::worker::Worker;
use crate::metrics::Reject;
use crate::metrics::VariantMetrics;

/// A routed request starts: the worker is busy (a graceful stop waits for it) and its
/// variant has one more request in flight.
#[inline]
pub(crate) fn begin(w: &Worker, ctx: &RequestCtx) {
    w.metrics.busy.inc();
    begin_variant(w, ctx);
}

/// The request's variant starts an attempt: at the start, and again for stable when a
/// canary request fails over.
#[inline]
pub(crate) fn begin_variant(w: &Worker, ctx: &RequestCtx) {
    let vm = ctx.route().metrics.slot(w.id, ctx.variant);
    vm.requests.inc();
    if ctx.h2 {
        vm.h2_requests.inc();
    }
    vm.in_flight.inc();
}

/// The request's attempts are over: a response head was chosen, and nothing of it has
/// been sent yet. Their connects, reuses, retries and failures, and a canary attempt
/// that failed over to stable, are counted now, so a client (or an operator) that has
/// seen the response sees them in the figures too.
pub(crate) fn settle_attempts(w: &Worker, ctx: &RequestCtx, out: &mut Outcome) {
    let route = ctx.route();
    for (v, tally) in out.take_tallies() {
        add_tally(route.metrics.slot(w.id, v), &tally);
    }
    for seen in out.take_seen() {
        let plan = route.plan(seen.variant).0;
        if let Some(e) = plan.endpoints.get(seen.index as usize) {
            e.observe(w.id, plan.outlier.as_ref(), seen.what);
        }
    }
    if let Some(f) = out.failed_over.take() {
        settle(
            w,
            route,
            Variant::Canary,
            Answer {
                status: 502,
                connect_failed: f.connect_failed,
                grpc_error: false,
            },
            f.latency_us,
        );
    }
}

/// A head refused before a route was chosen, counted by kind.
pub(crate) fn rejected(w: &Worker, kind: Option<Reject>) {
    if let Some(kind) = kind {
        w.metrics.rejected[kind as usize].inc();
    }
}

/// Counts a routed request, whatever happened to it; the worker is no longer busy with it.
pub(crate) fn finish(w: &Worker, ctx: &RequestCtx, out: &mut Outcome) {
    routed(w, ctx, out);
    w.metrics.busy.dec();
}

fn routed(w: &Worker, ctx: &RequestCtx, out: &mut Outcome) {
    // A request that failed before a response head still has its attempts to count.
    settle_attempts(w, ctx, out);
    let route = ctx.route();
    let vm = route.metrics.slot(w.id, ctx.variant);
    if let Some(kind) = out.failure {
        vm.upstream_failures[kind as usize].inc();
    } else if let Some(kind) = out.reject {
        w.metrics.rejected[kind as usize].inc();
    }
    vm.bytes_in.add(out.bytes_in);
    vm.bytes_out.add(out.bytes_out);
    let upstream_us = out.upstream_head.map(|d| d.as_micros() as u64);
    if let Some(us) = upstream_us {
        vm.upstream_latency.record(us);
    }
    let total_us = ctx.start.elapsed().as_micros() as u64;
    let grpc_error = out.grpc_status.is_some_and(|code| {
        if let Some(n) = vm.grpc.get(usize::from(code)) {
            n.inc();
        }
        let error = w.config.grpc_error_codes.contains(code);
        if error {
            vm.grpc_errors.inc();
        }
        error
    });
    settle(
        w,
        route,
        ctx.variant,
        Answer {
            status: out.status,
            connect_failed: out.connect_failed,
            grpc_error,
        },
        total_us,
    );
    if let (Some(queue), Some((method, path))) = (&w.log, &ctx.log) {
        let rec = Record {
            time_us: now_us(),
            stage: Inline::new(route.stage.as_bytes()),
            route: Inline::new(route.name.as_bytes()),
            deployment: Inline::new(ctx.plan().deployment_id.as_bytes()),
            variant: ctx.variant,
            method: *method,
            path: *path,
            h2: ctx.h2,
            status: out.status,
            grpc_status: out.grpc_status,
            upstream: out.upstream,
            latency_us: total_us,
            upstream_latency_us: upstream_us,
            bytes_in: out.bytes_in,
            bytes_out: out.bytes_out,
        };
        if queue.push(rec).is_err() {
            w.metrics.log_dropped.inc();
        }
    }
}

#[inline]
fn add_tally(vm: &VariantMetrics, t: &Tally) {
    if t.connects > 0 {
        vm.upstream_connects.add(u64::from(t.connects));
    }
    if t.reuses > 0 {
        vm.upstream_reuses.add(u64::from(t.reuses));
    }
    if t.eventful {
        vm.retries.add(u64::from(t.retries));
        vm.stale_retries.add(u64::from(t.stale_retries));
        for (c, n) in vm.upstream_failures.iter().zip(t.failures) {
            c.add(u64::from(n));
        }
    }
}

/// Ends one attempt of `variant` on `route`: no longer in flight, its status class, its
/// total latency, and (for the canary) the kill switch's window.
fn settle(w: &Worker, route: &RouteSnap, variant: Variant, answer: Answer, total_us: u64) {
    let status = answer.status;
    let vm = route.metrics.slot(w.id, variant);
    vm.in_flight.dec();
    if (100..600).contains(&status) {
        vm.responses[usize::from(status / 100 - 1)].inc();
    }
    vm.total_latency.record(total_us);
    if variant == Variant::Canary {
        route.kill.record(w.id, &route.name, answer, &route.split);
    }
}
