//! The embedding hook: an embedder's [`Decider`] is asked about destinations no rule matched
//! (`not-allowed`), as Codex's `NetworkPolicyDecider` and sandbox-runtime's ask callback are.
//!
//! It is never asked about anything else: a deny rule, a local or metadata address, the
//! proxy itself, an invalid host, `limited` mode or a DNS failure refuse before or after it,
//! whatever it would say. A yes continues the pipeline as if an allow rule matched, so the
//! answers of the name are still classified. Its answer is kept per destination (host and
//! port) for [`DeciderOptions::cache_for`]; concurrent requests for one destination share one
//! question; an answer that does not come within [`DeciderOptions::timeout`] denies (and is not
//! kept, so the next request asks again).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::policy::{Host, Target};

/// What the decider is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The listener that asked: `http`, `connect`, `socks-tcp` or `socks-udp`.
    pub protocol: &'static str,
    /// The client that asked for the destination.
    pub client: SocketAddr,
    /// The destination's host, canonical (lower-case name, or an IP address).
    pub host: String,
    /// The destination port.
    pub port: u16,
}

/// The future a [`Decider`] answers with: `true` allows.
pub type Answer<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// Decides destinations no rule matched. Implemented for any `Fn(Question) -> Future<bool>`.
pub trait Decider: Send + Sync + 'static {
    /// Whether the destination in `question` may be reached.
    fn decide(&self, question: Question) -> Answer<'_>;
}

impl<F, Fut> Decider for F
where
    F: Fn(Question) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    fn decide(&self, question: Question) -> Answer<'_> {
        Box::pin(self(question))
    }
}

/// How long answers are kept, and how long one may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeciderOptions {
    /// How long an answer stands for its destination (default 60 s).
    pub cache_for: Duration,
    /// How long the decider may take before the destination is denied (default 10 s).
    pub timeout: Duration,
}

impl Default for DeciderOptions {
    fn default() -> Self {
        DeciderOptions {
            cache_for: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// One destination's answer, asked at most once while it stands.
struct Slot {
    asked: Instant,
    answer: Arc<OnceCell<bool>>,
}

/// The decider with its answer cache, as the gate consults it.
#[derive(Clone)]
pub(crate) struct Asker {
    decider: Arc<dyn Decider>,
    options: DeciderOptions,
    answers: Arc<Mutex<HashMap<(String, u16), Slot>>>,
}

impl fmt::Debug for Asker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Asker")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Answers kept at most; past it, expired ones are dropped before a new one is kept.
const MAX_KEPT: usize = 4096;

impl Asker {
    pub(crate) fn new(decider: Arc<dyn Decider>, options: DeciderOptions) -> Self {
        Asker {
            decider,
            options,
            answers: Arc::default(),
        }
    }

    /// The decider's answer for `target`, from the cache while it stands.
    pub(crate) async fn ask(
        &self,
        protocol: &'static str,
        client: SocketAddr,
        target: &Target<'_>,
    ) -> bool {
        // Keyed by identity: a mapped IPv6 spelling of an IPv4 address is that address.
        let host = match &target.host {
            Host::Ip(ip) => ip.to_canonical().to_string(),
            Host::Name(name) => name.to_string(),
        };
        let key = (host, target.port);
        let cell = self.slot(&key);
        let question = Question {
            protocol,
            client,
            host: key.0,
            port: key.1,
        };
        let asked = cell.get_or_try_init(|| async {
            tokio::time::timeout(self.options.timeout, self.decider.decide(question)).await
        });
        match asked.await {
            Ok(&answer) => answer,
            Err(_) => {
                tracing::warn!(%client, dest = %target, "the decider did not answer in time; denied");
                false
            }
        }
    }

    /// The cell holding `key`'s answer: the standing one, or a fresh one to ask.
    fn slot(&self, key: &(String, u16)) -> Arc<OnceCell<bool>> {
        let now = Instant::now();
        let cache_for = self.options.cache_for;
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = answers.get(key) {
            if now.duration_since(slot.asked) < cache_for {
                return Arc::clone(&slot.answer);
            }
        }
        if answers.len() >= MAX_KEPT {
            answers.retain(|_, slot| now.duration_since(slot.asked) < cache_for);
        }
        let answer = Arc::new(OnceCell::new());
        if answers.len() >= MAX_KEPT {
            // Still full of standing answers (a client walking through fresh names): ask
            // without keeping, so the cache cannot grow without bound.
            return answer;
        }
        let slot = Slot {
            asked: now,
            answer: Arc::clone(&answer),
        };
        answers.insert(key.clone(), slot);
        answer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting(answer: bool, delay: Duration) -> (Asker, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&asked);
        let decider = move |_: Question| {
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                answer
            }
        };
        let options = DeciderOptions {
            cache_for: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
        };
        (Asker::new(Arc::new(decider), options), asked)
    }

    fn target(s: &str) -> Target<'static> {
        Target::parse_authority(s, None).unwrap().into_owned()
    }

    const CLIENT: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    #[tokio::test(start_paused = true)]
    async fn one_question_per_destination_while_the_answer_stands() {
        let (asker, asked) = counting(true, Duration::from_millis(10));
        let a = target("a.test:443");
        let (x, y) = tokio::join!(
            asker.ask("connect", CLIENT, &a),
            asker.ask("http", CLIENT, &a)
        );
        assert!(x && y);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "concurrent requests share one question"
        );
        assert!(asker.ask("connect", CLIENT, &target("A.TEST:443")).await);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "the same destination, spelled otherwise"
        );
        assert!(asker.ask("connect", CLIENT, &target("a.test:80")).await);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "another port is another destination"
        );
        assert!(asker.ask("connect", CLIENT, &target("192.0.2.1:80")).await);
        assert!(
            asker
                .ask("connect", CLIENT, &target("[::ffff:192.0.2.1]:80"))
                .await
        );
        assert_eq!(
            asked.load(Ordering::SeqCst),
            3,
            "a mapped address is the same destination"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(asker.ask("connect", CLIENT, &a).await);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            4,
            "asked again once the answer expired"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_denies_and_is_not_kept() {
        let (asker, asked) = counting(true, Duration::from_secs(5));
        let a = target("slow.test:443");
        assert!(
            !asker.ask("connect", CLIENT, &a).await,
            "past the timeout: denied"
        );
        assert!(!asker.ask("connect", CLIENT, &a).await);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "a timeout is not an answer to keep"
        );
    }

    /// A client walking through fresh names cannot grow the cache past its bound: once it is
    /// full of standing answers, new ones are asked but not kept.
    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded() {
        let (asker, _) = counting(true, Duration::ZERO);
        for i in 0..MAX_KEPT + 100 {
            let _ = asker.slot(&(format!("n{i}.test"), 443));
        }
        assert_eq!(asker.answers.lock().unwrap().len(), MAX_KEPT);
        tokio::time::advance(Duration::from_secs(61)).await;
        let _ = asker.slot(&("fresh.test".into(), 443));
        assert_eq!(
            asker.answers.lock().unwrap().len(),
            1,
            "expired answers make room"
        );
    }
}
