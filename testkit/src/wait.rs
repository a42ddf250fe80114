//! Polling with a deadline and a useful failure message.
use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::wait::Condition;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Longest "last observed" text kept in a timeout message.
const MAX_OBSERVED_CHARS: usize = 4000;

/// "Not yet": the observed state that did not satisfy a [`wait_for`] check. It becomes the
/// `last observed` part of the timeout message. API errors convert into it, so `?` works inside
/// the check (a transient error just means "not yet").
#[derive(Debug, Clone)]
pub struct NotYet(pub String);

impl NotYet {
    /// Describes what was observed, e.g. `NotYet::new(format!("readyReplicas={n}"))`.
    pub fn new(observed: impl Into<String>) -> Self {
        NotYet(observed.into())
    }
}

impl From<kube::Error> for NotYet {
    fn from(e: kube::Error) -> Self {
        NotYet(format!("API error: {e}"))
    }
}

/// Runs `check` every 250 ms until it returns `Ok`, or fails after `timeout` with
/// [`Error::Timeout`] naming `what` and the last [`NotYet`] observed. On timeout the component
/// log tails are printed to stderr.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, NotYet>>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let last = match tokio::time::timeout_at(deadline.into(), check()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(NotYet(observed))) => observed,
            Err(_) => "the last check itself did not finish before the deadline".to_owned(),
        };
        if Instant::now() + POLL_INTERVAL >= deadline {
            if let Some(log_dir) = crate::logs::cluster_log_dir() {
                eprintln!("testkit: timed out waiting for {what}");
                crate::logs::dump_logs(log_dir);
            }
            return Err(Error::Timeout {
                what: what.to_owned(),
                waited: started.elapsed(),
                last_observed: truncate(last),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until the object `name` in `api` satisfies `condition` (any
/// [`kube::runtime::conditions`] condition or a closure `Fn(Option<&K>) -> bool`; `None` means
/// the object does not exist). Returns the object (`None` if the condition matched its absence).
/// The timeout message shows the object's last observed `status` (or the whole object if it has
/// none).
pub async fn await_condition<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    condition: impl Condition<K>,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize,
{
    wait_for(timeout, what, || async {
        let object = api.get_opt(name).await?;
        if condition.matches_object(object.as_ref()) {
            Ok(object)
        } else {
            Err(NotYet::new(describe(name, object.as_ref())))
        }
    })
    .await
}

fn describe<K: Serialize>(name: &str, object: Option<&K>) -> String {
    let Some(object) = object else {
        return format!("{name} does not exist");
    };
    match serde_json::to_value(object) {
        Ok(value) => {
            let shown = value.get("status").unwrap_or(&value);
            format!("{name}: {shown}")
        }
        Err(e) => format!("{name}: (cannot serialize: {e})"),
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_OBSERVED_CHARS {
        let mut end = MAX_OBSERVED_CHARS;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{wait_for, NotYet};
    use crate::Error;
    use std::time::Duration;

    #[tokio::test]
    async fn wait_for_returns_the_first_success() {
        let mut calls = 0;
        let got = wait_for(Duration::from_secs(5), "third call", || {
            calls += 1;
            let n = calls;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(NotYet::new(format!("call {n}")))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn timeout_names_what_was_awaited_and_the_last_observation() {
        let err = wait_for(Duration::from_millis(600), "the impossible", || async {
            Err::<(), _>(NotYet::new("still impossible"))
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }));
        let message = err.to_string();
        assert!(message.contains("the impossible"), "{message}");
        assert!(
            message.contains("last observed: still impossible"),
            "{message}"
        );
    }
}
