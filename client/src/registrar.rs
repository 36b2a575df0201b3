//! Registering this node's files with the trackers many at a time
//! (`UploadFiles`): a bulk share's files, the shares a login resumes, and
//! the downloads that just verified their first piece, one request (and
//! one tracker log sync) per batch of up to [`MAX_UPLOADS`] instead of one
//! per file.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use ringshare_engine::meta::FileMeta;
use ringshare_engine::proto::{Refusal, Request, Response, Token, MAX_UPLOADS};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Semaphore};

use crate::tracker_link::LinkPool;

/// Most piece-hash bytes in one batch: a batch of large files is split well
/// below the frame limit, so that one request stays quick to send and check.
const BATCH_HASH_BYTES: usize = 4 << 20;

/// Registration requests a [`Registrar`] keeps in flight at once.
const CALLS_AT_ONCE: usize = 4;

/// How long a download's registration waits for others to go with it. A
/// bulk get verifies a small file's piece every fraction of a millisecond
/// on a near path, and a request to a near tracker comes back as fast: with
/// nothing held back, nearly every file went in a request of its own (9,400
/// requests for 10,000 files, each an op, a log append and a sync at the
/// tracker). A file is worth listing a few milliseconds later just the same.
const GATHER: Duration = Duration::from_millis(20);

/// Registers `files` in `group` for session `token`, in one request (at
/// most [`MAX_UPLOADS`] files): per file, in order, `None` when the
/// tracker took it, else why not. An ended session is every file's
/// answer; any other refusal of the whole request (a tracker catching up,
/// failing, or too old to know the request) is an error: it says nothing
/// about the files, so none of them may be dropped for it.
pub async fn upload_files(
    links: &LinkPool,
    token: Token,
    group: &str,
    files: Vec<FileMeta>,
) -> Result<Vec<Option<Refusal>>> {
    let n = files.len();
    let req = Request::UploadFiles { token, group: group.to_owned(), files };
    match links.call(&req).await? {
        Response::Uploads(answers) if answers.len() == n => Ok(answers),
        Response::Uploads(answers) => {
            bail!("the tracker answered for {} files, {n} registered", answers.len())
        }
        Response::Refused(Refusal::NotLoggedIn) => Ok(vec![Some(Refusal::NotLoggedIn); n]),
        Response::Refused(r) => bail!("the tracker refused the registrations: {r}"),
        other => bail!("unexpected answer from the tracker: {other:?}"),
    }
}

/// Splits `items` into batches one [`upload_files`] each: at most
/// [`MAX_UPLOADS`] files and about [`BATCH_HASH_BYTES`] of piece hashes (a
/// file larger than that is a batch of its own).
pub fn batches<T>(items: Vec<T>, meta: impl Fn(&T) -> &FileMeta) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = hash_bytes(meta(&item));
        match out.last_mut() {
            Some(last) if last.len() < MAX_UPLOADS && bytes + size <= BATCH_HASH_BYTES => {
                bytes += size;
                last.push(item);
            }
            _ => {
                bytes = size;
                out.push(vec![item]);
            }
        }
    }
    out
}

/// Registers each batch of `batches` (its group, its files) with one
/// [`upload_files`], [`CALLS_AT_ONCE`] of them at a time, handing every
/// batch to `answered` with its answers (or why its request failed) as
/// they come. After the first error, its own or `answered`'s, it sends no
/// more batches but still hands over those already sent, then returns that
/// error; batches not yet sent stay in `batches`.
pub async fn register_batches<T, I>(
    links: &LinkPool,
    token: Token,
    batches: &mut I,
    meta: fn(&T) -> &FileMeta,
    mut answered: impl FnMut(Vec<T>, Result<Vec<Option<Refusal>>>) -> Result<()>,
) -> Result<()>
where
    T: Send + 'static,
    I: Iterator<Item = (String, Vec<T>)>,
{
    let mut asking = tokio::task::JoinSet::new();
    let mut failure = None;
    loop {
        while failure.is_none() && asking.len() < CALLS_AT_ONCE {
            let Some((group, batch)) = batches.next() else { break };
            let links = links.clone();
            asking.spawn(async move {
                let metas = batch.iter().map(|item| meta(item).clone()).collect();
                let answers = upload_files(&links, token, &group, metas).await;
                (batch, answers)
            });
        }
        let Some(joined) = asking.join_next().await else { break };
        let outcome = match joined {
            Ok((batch, answers)) => answered(batch, answers),
            Err(e) => Err(anyhow::Error::from(e).context("registration task")),
        };
        if let Err(e) = outcome {
            failure.get_or_insert(e);
        }
    }
    failure.map_or(Ok(()), Err)
}

fn hash_bytes(meta: &FileMeta) -> usize {
    20 * meta.piece_hashes.len()
}

/// A download's registration whose request failed (no tracker reachable,
/// every one catching up) is sent again after each of these waits: 1, 2,
/// 4, 8 and 16 s, then every [`RETRY_EVERY`], about ten minutes in all.
/// The download goes on meanwhile; its file is worth listing once a
/// tracker answers again.
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    (0..5).map(|i| Duration::from_secs(1 << i)).chain(std::iter::repeat_n(RETRY_EVERY, 19))
}

/// See [`retry_delays`].
const RETRY_EVERY: Duration = Duration::from_secs(30);

/// Runs `call` until it succeeds, waiting with `sleep` for each of
/// `delays` between failures; the last failure once they run out.
pub async fn with_retries<T, C, CF, S, SF>(
    mut call: C,
    delays: impl IntoIterator<Item = Duration>,
    mut sleep: S,
) -> Result<T>
where
    C: FnMut() -> CF,
    CF: Future<Output = Result<T>>,
    S: FnMut(Duration) -> SF,
    SF: Future<Output = ()>,
{
    let mut delays = delays.into_iter();
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => match delays.next() {
                Some(wait) => {
                    tracing::debug!("registration failed, again in {wait:?}: {e:#}");
                    sleep(wait).await;
                }
                None => return Err(e),
            },
        }
    }
}

/// One file to register: for which session, in which group.
type Pending = (Token, String, FileMeta);

/// Registers files in the background as they are handed over, batching
/// whatever queued while earlier requests were out: a bulk get's downloads
/// each register once their first piece is verified, and thousands of
/// small files do so within seconds. Cheap to clone; the task ends with
/// the last clone.
#[derive(Debug, Clone)]
pub struct Registrar {
    queue: mpsc::UnboundedSender<Pending>,
    unanswered: Arc<Unanswered>,
    rt: Handle,
    later: Arc<std::sync::Mutex<Later>>,
}

/// Files handed over to be registered later ([`Registrar::register_later`]),
/// in the order they are due (one delay for all).
#[derive(Debug, Default)]
struct Later {
    queue: std::collections::VecDeque<(std::time::Instant, Pending)>,
    /// A task releases them as they fall due.
    releasing: bool,
    /// [`Registrar::drop_later`] was called: none is registered now.
    dropped: bool,
}

/// Files handed over whose registration has not been answered (nor given
/// up), and a wake-up for each answer; every file ever handed over.
#[derive(Debug, Default)]
struct Unanswered {
    files: std::sync::atomic::AtomicUsize,
    answered: tokio::sync::Notify,
    handed: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
}

impl Unanswered {
    fn done(&self, n: usize) {
        self.files.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
        self.answered.notify_waiters();
    }
}

impl Registrar {
    /// Starts the registering task on `rt`.
    pub fn start(rt: &Handle, links: LinkPool) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let unanswered = Arc::new(Unanswered::default());
        rt.spawn(run(rx, links, Arc::clone(&unanswered)));
        Self { queue, unanswered, rt: rt.clone(), later: Arc::default() }
    }

    /// [`Registrar::register`] once `after` has passed, unless
    /// [`Registrar::drop_later`] comes first. A `get` on a port picked for
    /// the run withdraws every file it registered as it ends: a small file
    /// fetched in its last seconds was registered and withdrawn again
    /// (two ops, log syncs and snapshots' worth at the trackers per file:
    /// a quarter of a 10,000-file get's tracker time went to them), with
    /// nobody the wiser. Others fetching it meanwhile still find the node,
    /// listed as its fetcher for 10 s after its last ask for peers.
    pub fn register_later(&self, token: Token, group: String, meta: FileMeta, after: Duration) {
        let due = std::time::Instant::now() + after;
        let mut later = self.later.lock().unwrap_or_else(|p| p.into_inner());
        if later.dropped {
            return;
        }
        later.queue.push_back((due, (token, group, meta)));
        if !later.releasing {
            later.releasing = true;
            self.rt.spawn(release(self.clone()));
        }
    }

    /// Files handed to [`Registrar::register_later`] and not yet due are
    /// never registered, nor are those handed over from now on. Returns
    /// those (group, name).
    pub fn drop_later(&self) -> std::collections::BTreeSet<(String, String)> {
        let mut later = self.later.lock().unwrap_or_else(|p| p.into_inner());
        later.dropped = true;
        later.queue.drain(..).map(|(_, (_, group, meta))| (group, meta.name)).collect()
    }

    /// Registers `meta` in `group` for session `token`, soon. Failures are
    /// logged: a download goes on whether or not others learn of it.
    pub fn register(&self, token: Token, group: String, meta: FileMeta) {
        self.unanswered.files.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.unanswered
            .handed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((group.clone(), meta.name.clone()));
        if self.queue.send((token, group, meta)).is_err() {
            self.unanswered.done(1);
        }
    }

    /// Every file handed over so far (group, name).
    pub fn handed(&self) -> std::collections::BTreeSet<(String, String)> {
        self.unanswered.handed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until every registration handed over has been answered, for
    /// at most `within` (a tracker that does not answer is asked again for
    /// minutes); whether they all were.
    pub async fn settled(&self, within: Duration) -> bool {
        let all = async {
            loop {
                let answered = self.unanswered.answered.notified();
                if self.unanswered.files.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    return;
                }
                answered.await;
            }
        };
        tokio::time::timeout(within, all).await.is_ok()
    }
}

/// Registers the files of [`Registrar::register_later`] as they fall due,
/// until none waits.
async fn release(registrar: Registrar) {
    loop {
        let next = {
            let mut later = registrar.later.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            // Under the lock: a file is registered before a `drop_later`
            // returns, or never.
            while later.queue.front().is_some_and(|(due, _)| *due <= now) {
                let Some((_, (token, group, meta))) = later.queue.pop_front() else { break };
                registrar.register(token, group, meta);
            }
            match later.queue.front() {
                Some((due, _)) => *due,
                None => {
                    later.releasing = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
    }
}

/// The files that go with `first` in one batch: those handed over until
/// `deadline` (at once if a full batch waits already), up to
/// [`MAX_UPLOADS`] files and [`BATCH_HASH_BYTES`] of piece hashes; then the
/// file that would have made the batch too large (the next batch's first),
/// if one came. It sleeps once rather than waking for each file: a wake
/// per file cost more than the requests it saved.
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<Pending>,
    first: Pending,
    deadline: tokio::time::Instant,
) -> (Vec<Pending>, Option<Pending>) {
    if rx.len() + 1 < MAX_UPLOADS {
        tokio::time::sleep_until(deadline).await;
    }
    let mut bytes = hash_bytes(&first.2);
    let mut taken = vec![first];
    while taken.len() < MAX_UPLOADS {
        let Ok(next) = rx.try_recv() else { break };
        let size = hash_bytes(&next.2);
        if bytes + size > BATCH_HASH_BYTES {
            return (taken, Some(next));
        }
        bytes += size;
        taken.push(next);
    }
    (taken, None)
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    links: LinkPool,
    unanswered: Arc<Unanswered>,
) {
    let calls = Arc::new(Semaphore::new(CALLS_AT_ONCE));
    // A file that would have made the last batch too large: the next one's
    // first.
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let deadline = tokio::time::Instant::now() + GATHER;
        // While every call is out, more files queue: they go together, with
        // those that come within GATHER of the first.
        let Ok(permit) = Arc::clone(&calls).acquire_owned().await else { return };
        let (taken, next) = gather(&mut rx, first, deadline).await;
        carried = next;
        let mut by_group: BTreeMap<(Token, String), Vec<FileMeta>> = BTreeMap::new();
        for (token, group, meta) in taken {
            by_group.entry((token, group)).or_default().push(meta);
        }
        let links = links.clone();
        let unanswered = Arc::clone(&unanswered);
        tokio::spawn(async move {
            let mut permit = Some(permit);
            for ((token, group), files) in by_group {
                let names: Vec<String> = files.iter().map(|m| m.name.clone()).collect();
                let call = || upload_files(&links, token, &group, files.clone());
                // A failed request is sent again later, without holding one
                // of the calls at once (the next batches go meanwhile). An
                // answer lost after the tracker took the files makes the
                // next one "already sharing": taken.
                let sleep = |wait| {
                    permit = None;
                    tokio::time::sleep(wait)
                };
                match with_retries(call, retry_delays(), sleep).await {
                    Ok(answers) => {
                        for (name, answer) in names.iter().zip(answers) {
                            match answer {
                                None | Some(Refusal::AlreadySharing { .. }) => {}
                                Some(r) => {
                                    tracing::warn!("register {group}/{name} as a sharer: {r}")
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!("register {} file(s) as a sharer: {e:#}", names.len()),
                }
                unanswered.done(names.len());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringshare_engine::meta::Sha1Digest;

    fn meta(pieces: usize) -> FileMeta {
        FileMeta {
            name: "f".into(),
            len: 1,
            sha1: Sha1Digest([0; 20]),
            piece_hashes: vec![Sha1Digest([0; 20]); pieces],
        }
    }

    #[tokio::test]
    async fn a_file_registered_later_is_registered_when_due_unless_dropped_first() {
        use ringshare_engine::tracker_info::TrackerList;
        let dir = tempfile::tempdir().unwrap();
        // A tracker nobody answers at: registrations are handed over (and
        // retried), which is what is looked at here.
        let list = TrackerList::parse("127.0.0.1:1\n", "tracker_info.txt").unwrap();
        let links = LinkPool::new(crate::tracker_link::Trackers::open(list, dir.path()).unwrap());
        let r = Registrar::start(&Handle::current(), links);
        let token = Token([1; 16]);
        let named = |name: &str| FileMeta { name: name.into(), ..meta(1) };
        let handed = |name: &str| r.handed().contains(&("g".to_owned(), name.to_owned()));
        r.register_later(token, "g".into(), named("soon"), Duration::from_millis(20));
        r.register_later(token, "g".into(), named("late"), Duration::from_secs(600));
        assert!(!handed("soon"), "not before it is due");
        let start = std::time::Instant::now();
        while !handed("soon") {
            assert!(start.elapsed() < Duration::from_secs(60), "never registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let dropped = r.drop_later();
        assert_eq!(dropped.into_iter().collect::<Vec<_>>(), [("g".to_owned(), "late".to_owned())]);
        r.register_later(token, "g".into(), named("after"), Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!handed("late") && !handed("after"), "{:?}", r.handed());
        assert!(r.later.lock().unwrap().queue.is_empty());
    }

    #[test]
    fn failed_registrations_are_sent_again_for_about_ten_minutes() {
        let waits: Vec<Duration> = retry_delays().collect();
        assert_eq!(waits[..5], [1, 2, 4, 8, 16].map(Duration::from_secs));
        let total: Duration = waits.iter().sum();
        assert!(
            total >= Duration::from_secs(590) && total <= Duration::from_secs(630),
            "{total:?}"
        );
        assert!(waits.iter().all(|w| *w <= RETRY_EVERY));
    }

    #[tokio::test]
    async fn a_call_is_sent_again_after_each_wait_until_it_succeeds() {
        let calls = std::cell::Cell::new(0);
        let slept = std::cell::RefCell::new(Vec::new());
        let call = || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    bail!("down ({n})")
                } else {
                    Ok(n)
                }
            }
        };
        let sleep = |d| {
            slept.borrow_mut().push(d);
            async {}
        };
        let delays = [1, 2, 3, 4].map(Duration::from_secs);
        assert_eq!(with_retries(call, delays, sleep).await.unwrap(), 3);
        assert_eq!(*slept.borrow(), [1, 2].map(Duration::from_secs));

        // Failing every time: the last error, once every wait is spent.
        calls.set(-10);
        slept.borrow_mut().clear();
        let e = with_retries(call, delays, sleep).await.unwrap_err();
        assert_eq!(e.to_string(), "down (-5)");
        assert_eq!(slept.borrow().len(), 4);
    }

    fn pending(pieces: usize) -> Pending {
        (Token([7; 16]), "g".into(), meta(pieces))
    }

    #[tokio::test(start_paused = true)]
    async fn a_registration_waits_briefly_for_others_to_go_with_it() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        let deadline = start + GATHER;
        // Two queued, two more handed over within the window, one after it.
        tx.send(pending(1)).unwrap();
        tx.send(pending(1)).unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            for at in [GATHER / 4, GATHER / 2, GATHER * 2] {
                tokio::time::sleep_until(start + at).await;
                late.send(pending(1)).unwrap();
            }
        });
        let (taken, carried) = gather(&mut rx, pending(1), deadline).await;
        assert_eq!(taken.len(), 5);
        assert!(carried.is_none());
        assert_eq!(tokio::time::Instant::now(), deadline, "it waited out the window");
        // The one after the window is the next batch's.
        let next = rx.recv().await.unwrap();
        assert_eq!(tokio::time::Instant::now(), start + GATHER * 2);
        let (taken, _) = gather(&mut rx, next, tokio::time::Instant::now() + GATHER).await;
        assert_eq!(taken.len(), 1);

        // A full batch goes at once, without waiting out the window; a file
        // over the byte bound is carried to the next batch.
        for _ in 0..MAX_UPLOADS + 1 {
            tx.send(pending(1)).unwrap();
        }
        let at = tokio::time::Instant::now();
        let (taken, carried) = gather(&mut rx, pending(1), at + GATHER).await;
        assert_eq!(taken.len(), MAX_UPLOADS);
        assert!(carried.is_none());
        assert_eq!(tokio::time::Instant::now(), at);
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok() && rx.try_recv().is_err());
        tx.send(pending(BATCH_HASH_BYTES / 20)).unwrap();
        let (taken, carried) = gather(&mut rx, pending(1), at + GATHER).await;
        assert_eq!(taken.len(), 1);
        assert_eq!(carried.map(|p| p.2.piece_hashes.len()), Some(BATCH_HASH_BYTES / 20));

        // Every sender gone: the file it has goes alone.
        drop(tx);
        let (taken, carried) = gather(&mut rx, pending(1), at + GATHER).await;
        assert_eq!((taken.len(), carried.is_none()), (1, true));
    }

    #[test]
    fn batches_hold_at_most_so_many_files_and_hash_bytes() {
        let small: Vec<FileMeta> = (0..MAX_UPLOADS * 2 + 1).map(|_| meta(1)).collect();
        let sizes: Vec<usize> = batches(small, |m| m).iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_UPLOADS, MAX_UPLOADS, 1]);
        // Half the byte bound each: two to a batch; one over it alone.
        let half = BATCH_HASH_BYTES / 40;
        let big = vec![meta(half), meta(half), meta(half), meta(3 * half), meta(1)];
        let sizes: Vec<usize> = batches(big, |m| m).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1, 1, 1]);
        assert!(batches(Vec::<FileMeta>::new(), |m| m).is_empty());
    }
}
