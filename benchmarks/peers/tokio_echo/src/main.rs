// Tokio peer of benchmarks/echo_server: the same protocol, written the way a Tokio user
// would, on a current-thread runtime (one thread, like every server in the comparison).
//
//   tokio_echo [--port N]      (also --port=N; default 0 = an ephemeral port)
//
// Binds 127.0.0.1:N (SO_REUSEADDR, backlog 4096), prints "port N" once listening, echoes
// every byte of every connection (TCP_NODELAY), and runs until SIGINT or SIGTERM, then
// returns from main with status 0 (callgrind writes its output only on a normal exit).
// Bad arguments: a message on stderr and status 2.
//
// Kept buildable by Debian 12's rustc 1.63 (no let-else, no std::future::poll_fn).
use std::future::Future;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Same size as echo_server's session buffer. A Vec rather than an array in the task:
/// a 16 KiB array would make the task's future itself 16 KiB, which is moved (copied) on
/// its way into the heap-allocated task when it is spawned; the Vec is one allocation of
/// the same size and keeps the future small.
const BUFFER_SIZE: usize = 16384;

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(n) if n <= 65535 => Ok(n as u16),
        Ok(_) => Err(format!("--port {}: out of range (0..65535)", text)),
        Err(_) => Err(format!("--port {}: not a number", text)),
    }
}

fn parse_args() -> Result<u16, String> {
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--port" {
            match args.next() {
                Some(value) => port = parse_port(&value)?,
                None => return Err("--port needs a value".to_string()),
            }
        } else if let Some(value) = arg.strip_prefix("--port=") {
            port = parse_port(value)?;
        } else {
            return Err(format!("unknown argument: {}", arg));
        }
    }
    Ok(port)
}

/// 10,000 connections need more descriptors than the usual soft limit of 1024.
fn raise_fd_limit() {
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Resolves when either signal arrives (a select! without the macros feature).
struct EitherSignal {
    interrupt: Signal,
    terminate: Signal,
}

impl Future for EitherSignal {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.interrupt.poll_recv(cx).is_ready() || this.terminate.poll_recv(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

async fn session(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; BUFFER_SIZE];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(session(stream));
            }
            // The peer gave up before we accepted: nothing to wait for.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted
                || e.kind() == io::ErrorKind::Interrupted => {}
            // EMFILE, ENFILE, ENOBUFS...: quietly back off and retry.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

fn listen(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(4096)
}

async fn serve(port: u16) -> io::Result<()> {
    // Install the handlers before announcing the port, so a signal sent right after
    // "port N" is seen is never missed.
    let stop = EitherSignal {
        interrupt: signal(SignalKind::interrupt())?,
        terminate: signal(SignalKind::terminate())?,
    };
    let listener = listen(port)?;
    let actual = listener.local_addr()?.port();
    {
        let mut out = io::stdout().lock();
        writeln!(out, "port {}", actual)?;
        out.flush()?;
    }
    tokio::spawn(accept_loop(listener));
    stop.await;
    Ok(())
}

fn main() -> ExitCode {
    let port = match parse_args() {
        Ok(port) => port,
        Err(message) => {
            eprintln!("tokio_echo: {}", message);
            eprintln!("usage: tokio_echo [--port N]");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio_echo: runtime: {}", e);
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(serve(port));
    // Dropping the runtime drops the accept loop and every session (closing their
    // sockets) before main returns normally.
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_echo: {}", e);
            ExitCode::from(1)
        }
    }
}
