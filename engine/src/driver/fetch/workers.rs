//! Threads for downloads' control loops, kept for the next download when
//! one ends.
//!
//! A download's control loop blocks (on the tracker, on fsync), so it has a
//! thread for as long as the download runs. A bulk fetch of 10,000 small
//! files started 10,000 threads, one after another: creating and tearing
//! down each (its stack mapped, guarded, unmapped) was a visible part of a
//! small file's cost. A thread whose job ended now waits [`IDLE_FOR`] for
//! the next one before it exits, so a bulk fetch keeps about as many
//! threads as it runs files at once.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// How long a thread without a job waits for one before it exits.
pub(super) const IDLE_FOR: Duration = Duration::from_secs(10);

/// A job, and what marks it ended: dropped once its thread is idle again,
/// so a caller that waited for it finds the thread free.
type Job = (Box<dyn FnOnce() + Send>, Ends);

/// Threads waiting for a job, each reached through its own channel.
static IDLE: Mutex<Vec<Sender<Job>>> = Mutex::new(Vec::new());

fn idle() -> MutexGuard<'static, Vec<Sender<Job>>> {
    IDLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tells when a job handed to [`spawn`] has ended.
#[derive(Debug, Clone, Default)]
pub(super) struct Done(Arc<(Mutex<bool>, Condvar)>);

impl Done {
    /// Blocks until the job has ended (returned or panicked).
    pub(super) fn wait(&self) {
        let (ended, cond) = &*self.0;
        let mut e = ended.lock().unwrap_or_else(|p| p.into_inner());
        while !*e {
            e = cond.wait(e).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Marks the job ended (for work done elsewhere than on a thread of
    /// [`spawn`]'s, with a `Done` of its own).
    pub(super) fn set(&self) {
        let (ended, cond) = &*self.0;
        *ended.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cond.notify_all();
    }
}

/// Marks its job ended when dropped, also by a panic's unwinding.
struct Ends(Done);

impl Drop for Ends {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Runs `job` on an idle thread, or on a new one named `name`.
pub(super) fn spawn(name: &str, job: impl FnOnce() + Send + 'static) -> std::io::Result<Done> {
    let done = Done::default();
    let mut job: Job = (Box::new(job), Ends(done.clone()));
    loop {
        let Some(tx) = idle().pop() else { break };
        match tx.send(job) {
            Ok(()) => return Ok(done),
            // That thread died (a job panicked); try the next.
            Err(e) => job = e.into_inner(),
        }
    }
    let (tx, rx) = crossbeam_channel::bounded::<Job>(1);
    thread::Builder::new().name(name.to_owned()).spawn(move || work(job, &tx, &rx))?;
    Ok(done)
}

fn work(first: Job, tx: &Sender<Job>, rx: &Receiver<Job>) {
    let mut job = first;
    loop {
        let (run, ends) = job;
        run();
        idle().push(tx.clone());
        drop(ends);
        job = match rx.recv_timeout(IDLE_FOR) {
            Ok(next) => next,
            Err(_) => {
                let mut list = idle();
                match list.iter().position(|t| t.same_channel(tx)) {
                    Some(i) => {
                        list.swap_remove(i);
                        return;
                    }
                    // Taken off the list meanwhile: its job is on the way.
                    None => {
                        drop(list);
                        match rx.recv() {
                            Ok(next) => next,
                            Err(_) => return,
                        }
                    }
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn jobs_run_and_threads_are_reused() {
        let ran = Arc::new(AtomicUsize::new(0));
        let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
        for _ in 0..20 {
            let (r, t) = (Arc::clone(&ran), Arc::clone(&threads));
            let done = spawn("test-worker", move || {
                r.fetch_add(1, Ordering::SeqCst);
                t.lock().unwrap().insert(thread::current().id());
            })
            .unwrap();
            done.wait();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 20);
        // One job at a time: the thread of the last is free for the next
        // (other tests of the process may add a few threads of their own).
        assert!(threads.lock().unwrap().len() < 20);
    }

    #[test]
    fn a_panicking_job_still_ends_and_others_run() {
        let done = spawn("test-worker", || panic!("a job that panics")).unwrap();
        done.wait();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        spawn("test-worker", move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap()
        .wait();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn jobs_at_once_each_get_a_thread() {
        // Two jobs that wait for each other finish only if both run at once.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let dones: Vec<Done> = (0..2)
            .map(|_| {
                let b = Arc::clone(&barrier);
                spawn("test-worker", move || {
                    b.wait();
                })
                .unwrap()
            })
            .collect();
        dones.iter().for_each(Done::wait);
    }
}
