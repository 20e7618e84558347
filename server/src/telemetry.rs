//! Logging: text or JSON lines on stdout (`RUST_LOG` overrides the configured level). Every line
//! written while serving a request names it: its id, method and path.
//!
//! The request is a task-local ([`in_request`]), not a `tracing` span. A span per request
//! formatted its three fields when it was made and was entered and left on every poll, whether
//! or not anything was logged (a build without it served 10–13% more gets). The formatters
//! below read the task-local only when they write a line. As with the span, a line logged on
//! another thread (a blocking task, the commit thread) names no request.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::Settings;

/// The request a log line was written for.
#[derive(Debug)]
pub struct RequestTag {
    pub id: String,
    pub method: hyper::Method,
    pub path: String,
}

tokio::task_local! {
    static REQUEST: Arc<RequestTag>;
}

/// Runs `work` with `tag` as the request its log lines name.
pub async fn in_request<F: Future>(tag: Arc<RequestTag>, work: F) -> F::Output {
    REQUEST.scope(tag, work).await
}

/// [`in_request`] for synchronous work.
pub fn with_request<R>(tag: Arc<RequestTag>, work: impl FnOnce() -> R) -> R {
    REQUEST.sync_scope(tag, work)
}

/// Installs the global `tracing` subscriber. A log line that cannot be written (stdout
/// redirected to a file on a full disk) is dropped: the default would report it with
/// `eprintln!`, which panics when stderr fails too.
pub fn init(settings: &Settings) {
    // rmcp logs every stateless MCP request's session start and end at info, and every
    // invalid-params answer at warn; those are per-request client events, not daemon ones.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},rmcp=error", settings.log_level))
    });
    if settings.log_json {
        tracing_subscriber::fmt()
            .json()
            .log_internal_errors(false)
            .event_format(Json(format::format().json()))
            .with_env_filter(filter)
            .init();
    } else {
        // Colours only for a terminal: escape codes in a log file or journal are noise to
        // whoever greps it.
        tracing_subscriber::fmt()
            .log_internal_errors(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .event_format(Text)
            .with_env_filter(filter)
            .init();
    }
}

/// `2026-12-03T15:13:38.785661Z  INFO request{request_id=req-1f method=POST
/// path=/api/v1/memories}: target: message key=value`, the layout of tracing-subscriber's
/// default format with the request in the place of its span.
struct Text;

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut w)?;
        let level = *event.metadata().level();
        if w.has_ansi_escapes() {
            write!(w, " \x1b[{}m{level:>5}\x1b[0m ", colour(level))?;
        } else {
            write!(w, " {level:>5} ")?;
        }
        if let Ok(written) = REQUEST.try_with(|r| {
            write!(
                w,
                "request{{request_id={} method={} path={}}}: ",
                r.id, r.method, r.path
            )
        }) {
            written?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                w.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(w, "{{{fields}}}")?;
                    }
                }
                w.write_str(": ")?;
            }
        }
        write!(w, "{}: ", event.metadata().target())?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

fn colour(level: Level) -> u8 {
    match level {
        Level::ERROR => 31,
        Level::WARN => 33,
        Level::INFO => 32,
        Level::DEBUG => 34,
        Level::TRACE => 35,
    }
}

/// tracing-subscriber's JSON line, with `"request":{"request_id","method","path"}` added when
/// it was written for a request.
struct Json(format::Format<format::Json>);

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    format::Format<format::Json>: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Ok(request) = REQUEST.try_with(|r| {
            serde_json::json!({
                "request_id": r.id,
                "method": r.method.as_str(),
                "path": r.path,
            })
            .to_string()
        }) else {
            return self.0.format_event(ctx, w, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let object = line.trim_end().strip_suffix('}').ok_or(fmt::Error)?;
        writeln!(w, "{object},\"request\":{request}}}")
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().expect("lock"))).expect("utf-8")
        }
    }

    fn tag() -> Arc<RequestTag> {
        Arc::new(RequestTag {
            id: "req-1f".to_owned(),
            method: hyper::Method::POST,
            path: "/api/v1/memories".to_owned(),
        })
    }

    /// Logs one line outside a request and one inside, on a current-thread runtime.
    fn log_both(subscriber: impl Subscriber + Send + Sync + 'static) {
        let _guard = tracing::subscriber::set_default(subscriber);
        tracing::info!(n = 1, "outside");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(in_request(tag(), async {
            tokio::task::yield_now().await;
            tracing::warn!(n = 2, "inside");
        }));
        with_request(tag(), || tracing::error!(n = 3, "inside, synchronously"));
    }

    #[test]
    fn text_lines_name_the_request_they_were_written_for() {
        let out = Lines::default();
        log_both(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .event_format(Text)
                .with_writer(out.clone())
                .finish(),
        );
        let text = out.take();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[2].contains(" ERROR request{request_id=req-1f "),
            "{}",
            lines[2]
        );
        assert!(
            lines[0].ends_with("  INFO engram_server::telemetry::tests: outside n=1"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(
                "  WARN request{request_id=req-1f method=POST path=/api/v1/memories}: \
                 engram_server::telemetry::tests: inside n=2"
            ),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].starts_with("20") && lines[1].as_bytes()[26] == b'Z',
            "{}",
            lines[1]
        );
    }

    #[test]
    fn json_lines_name_the_request_they_were_written_for() {
        let out = Lines::default();
        log_both(
            tracing_subscriber::fmt()
                .json()
                .event_format(Json(format::format().json()))
                .with_writer(out.clone())
                .finish(),
        );
        let text = out.take();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[2]["request"]["request_id"], "req-1f");
        assert_eq!(lines[0]["fields"]["message"], "outside");
        assert!(lines[0].get("request").is_none());
        assert_eq!(lines[1]["fields"]["message"], "inside");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(
            lines[1]["request"],
            serde_json::json!({"request_id": "req-1f", "method": "POST", "path": "/api/v1/memories"})
        );
    }
}
