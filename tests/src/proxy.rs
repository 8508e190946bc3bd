//! A TCP proxy in front of the origin that counts the bytes it passes toward clients,
//! and on demand slows them down or cuts connections after a byte budget: how tests see
//! origin egress and make an origin misbehave without faking it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does to traffic from the origin.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Bytes per second per connection toward the client (`None`: unlimited).
    pub rate: Option<u64>,
    /// Bytes toward clients after which every connection is cut (`None`: never).
    pub cut_after: Option<u64>,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// `127.0.0.1:PORT` to connect to instead of the origin.
    pub addr: String,
    down: Arc<AtomicU64>,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Proxies to `target` (`host:port`).
    pub fn start(target: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let down = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, f, s, target) = (
            down.clone(),
            faults.clone(),
            stop.clone(),
            target.to_owned(),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(origin) = TcpStream::connect(&target) {
                            pipe(client, origin, d.clone(), f.clone(), s.clone());
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Proxy {
            addr,
            down,
            faults,
            stop,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes passed from the origin toward clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }

    /// Changes what the proxy does from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How far a throttled connection may run ahead of its rate after being idle.
const MAX_BURST: Duration = Duration::from_millis(100);

fn pipe(
    client: TcpStream,
    origin: TcpStream,
    down: Arc<AtomicU64>,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
) {
    let (Ok(mut c_read), Ok(mut o_write)) = (client.try_clone(), origin.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut o_write);
        let _ = o_write.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let (mut origin, mut client) = (origin, client);
        let mut buf = vec![0u8; 16 * 1024];
        let mut start = Instant::now();
        let mut sent: u64 = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let n = match origin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let f = faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut n = n;
            if let Some(budget) = f.cut_after {
                let total = down.load(Ordering::Relaxed);
                if total >= budget {
                    break;
                }
                n = n.min((budget - total) as usize);
            }
            if client.write_all(&buf[..n]).is_err() {
                break;
            }
            down.fetch_add(n as u64, Ordering::Relaxed);
            sent += n as u64;
            if let Some(rate) = f.rate {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                match due.checked_sub(start.elapsed()) {
                    Some(wait) => std::thread::sleep(wait),
                    // Behind schedule by more than a short burst: the connection sat
                    // idle (kept alive between requests). Start the schedule afresh,
                    // or the idle time would let the next transfer through unthrottled.
                    None if start.elapsed() > due + MAX_BURST => {
                        start = Instant::now();
                        sent = 0;
                    }
                    None => {}
                }
            }
        }
        let _ = client.shutdown(Shutdown::Both);
        let _ = origin.shutdown(Shutdown::Both);
    });
}
