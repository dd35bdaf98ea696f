//! Crash-only: a part the member cannot work without ends the process when
//! it panics.
//!
//! A panic in the raft thread once left a zombie: both ports open, `endpoint
//! status` answering like a healthy follower, every write failing, and no
//! exit for a supervisor to notice — the cluster had lost a member without
//! anyone being told. etcd exits on the same packet (a Go panic ends the
//! process) and its supervisor restarts it. So do we: the threads and tasks
//! started here log what happened and exit with Go's panic status, and a
//! restart recovers from the durable state like after `kill -9`.
//!
//! A request handler that panics is different: tokio and hyper contain it to
//! that request's connection, and the member keeps serving everyone else.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// Go's exit status for an unrecovered panic, which etcd exits with.
pub const PANIC_EXIT_CODE: i32 = 2;

/// Starts a thread the member cannot work without.
pub fn spawn_thread<F>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let owned = name.to_string();
    std::thread::Builder::new()
        .name(owned.clone())
        .spawn(move || {
            if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
                fatal(&owned, payload.as_ref());
            }
        })
}

/// Starts a task the member cannot work without, on the current runtime.
pub fn spawn_task<F>(name: &'static str, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    spawn_task_on(&tokio::runtime::Handle::current(), name, task);
}

/// [`spawn_task`] from outside the runtime (the raft thread, say).
pub fn spawn_task_on<F>(rt: &tokio::runtime::Handle, name: &'static str, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = rt.spawn(task);
    rt.spawn(async move {
        if let Err(e) = handle.await
            && e.is_panic()
        {
            fatal(name, e.into_panic().as_ref());
        }
    });
}

fn fatal(part: &str, payload: &(dyn Any + Send)) -> ! {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(
        part,
        panic = message,
        "a part the member cannot run without panicked; exiting so that a supervisor restarts it"
    );
    // The log may be a file; say it where a supervisor looks too.
    eprintln!("cairn: fatal: {part} panicked: {message}; exiting");
    std::process::exit(PANIC_EXIT_CODE)
}
