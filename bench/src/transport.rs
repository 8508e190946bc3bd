//! The transports alone, for `shoal-bench peers`: how fast one QUIC stream carries bytes
//! between two endpoints on this machine when nothing else happens (no hashing, no
//! store, the receiver discards what it reads). This is the ceiling for a peer-to-peer
//! transfer, measured beside it in the same run.
//!
//! Two transports:
//! - libp2p's QUIC, built as the nodes build it (`node/src/p2p/swarm.rs`: the same
//!   windows and datagram ceiling). Its TLS comes from libp2p-tls, which offers
//!   ChaCha20-Poly1305 first, so that is the cipher every connection gets.
//! - quinn directly, with rustls offering only AES-128-GCM (which this CPU runs in
//!   hardware) and the same windows: what a bulk path of shoal's own on quinn could
//!   reach at best.
//!
//! Each endpoint runs on its own tokio runtime, as two node processes would.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use futures_util::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// What the nodes use (`node/src/p2p/swarm.rs`).
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;
const MAX_UDP_PAYLOAD: u16 = 65_000;

/// The sender writes this much at a time: one piece.
const WRITE: usize = 1 << 20;

/// Longest a round may take before it counts as failed.
const ROUND_LIMIT: Duration = Duration::from_secs(300);

const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal-bench/transport/1");

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// How long libp2p's QUIC takes to carry `bytes` over one stream on loopback.
pub fn libp2p_time(bytes: u64) -> anyhow::Result<Duration> {
    let receiver_rt = runtime()?;
    let sender_rt = runtime()?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<(libp2p::PeerId, Multiaddr)>();
    let receiver = receiver_rt.spawn(async move {
        let mut swarm = libp2p_swarm()?;
        let mut control = swarm.behaviour().new_control();
        let mut incoming = control.accept(PROTOCOL).map_err(|e| anyhow!("{e}"))?;
        swarm.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
        let local = *swarm.local_peer_id();
        let read = async move {
            let (_, mut stream) = incoming.next().await.context("no stream came")?;
            let mut buf = vec![0u8; WRITE];
            let mut got = 0u64;
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            anyhow::Ok((got, Instant::now()))
        };
        tokio::pin!(read);
        loop {
            tokio::select! {
                done = &mut read => return done,
                event = swarm.select_next_some() => {
                    if let SwarmEvent::NewListenAddr { address, .. } = event {
                        let _ = addr_tx.send((local, address));
                    }
                }
            }
        }
    });
    let (peer, addr) = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the receiver did not listen")?;
    let started = sender_rt.block_on(async move {
        let mut swarm = libp2p_swarm()?;
        let mut control = swarm.behaviour().new_control();
        swarm.dial(addr.with(libp2p::multiaddr::Protocol::P2p(peer)))?;
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => break,
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    anyhow::bail!("cannot reach the receiver: {error}")
                }
                _ => {}
            }
        }
        let drive = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        let mut stream = control
            .open_stream(peer, PROTOCOL)
            .await
            .map_err(|e| anyhow!("open a stream: {e}"))?;
        let started = Instant::now();
        let piece = vec![0x5a_u8; WRITE];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(WRITE as u64) as usize;
            stream.write_all(&piece[..n]).await?;
            left -= n as u64;
        }
        stream.close().await?;
        // The stream and the swarm's task stay alive until the receiver has it all.
        anyhow::Ok((started, drive, stream))
    })?;
    let (started, drive, _stream) = started;
    let (got, ended) = receiver_rt
        .block_on(async { tokio::time::timeout(ROUND_LIMIT, receiver).await })
        .context("the libp2p round took too long")???;
    drive.abort();
    anyhow::ensure!(got == bytes, "libp2p carried {got} of {bytes} bytes");
    Ok(ended.duration_since(started))
}

fn libp2p_swarm() -> anyhow::Result<Swarm<libp2p_stream::Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic_config(|mut quic| {
            quic.max_stream_data = STREAM_WINDOW;
            quic.max_connection_data = CONNECTION_WINDOW;
            quic.mtu_upper_bound(MAX_UDP_PAYLOAD)
        })
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .map_err(|e| anyhow!("{e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// How long quinn, with TLS 1.3 on AES-128-GCM alone, takes to carry `bytes` over one
/// stream on loopback.
pub fn quinn_time(bytes: u64) -> anyhow::Result<Duration> {
    let receiver_rt = runtime()?;
    let sender_rt = runtime()?;
    let certified = rcgen::generate_simple_self_signed(vec!["bench".to_owned()])?;
    let cert = certified.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let provider = Arc::new(aes_only());

    let mut server_tls = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())?;
    server_tls.alpn_protocols = vec![b"shoal-bench".to_vec()];
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?,
    ));
    server_config.transport_config(transport_config());

    let mut client_tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ThisCert { cert, provider }))
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![b"shoal-bench".to_vec()];
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?,
    ));
    client_config.transport_config(transport_config());

    let server = receiver_rt.block_on(async {
        quinn::Endpoint::server(server_config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    })?;
    let server_addr = server.local_addr()?;
    let receiver = receiver_rt.spawn(async move {
        let connection = server.accept().await.context("no connection")?.await?;
        let mut stream = connection.accept_uni().await?;
        let mut got = 0u64;
        while let Some(chunk) = stream.read_chunk(usize::MAX, true).await? {
            got += chunk.bytes.len() as u64;
        }
        let ended = Instant::now();
        connection.close(0u32.into(), b"done");
        server.wait_idle().await;
        anyhow::Ok((got, ended))
    });
    let started = sender_rt.block_on(async move {
        let mut client = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        client.set_default_client_config(client_config);
        let connection = client.connect(server_addr, "bench")?.await?;
        let mut stream = connection.open_uni().await?;
        let started = Instant::now();
        let piece = bytes::Bytes::from(vec![0x5a_u8; WRITE]);
        let mut left = bytes;
        while left > 0 {
            let n = left.min(WRITE as u64) as usize;
            stream.write_chunk(piece.slice(..n)).await?;
            left -= n as u64;
        }
        stream.finish()?;
        let _ = stream.stopped().await;
        connection.closed().await;
        anyhow::Ok(started)
    })?;
    let (got, ended) = receiver_rt
        .block_on(async { tokio::time::timeout(ROUND_LIMIT, receiver).await })
        .context("the quinn round took too long")???;
    anyhow::ensure!(got == bytes, "quinn carried {got} of {bytes} bytes");
    Ok(ended.duration_since(started))
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(STREAM_WINDOW.into())
        .receive_window(CONNECTION_WINDOW.into())
        .send_window(CONNECTION_WINDOW.into());
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    Arc::new(t)
}

/// ring's provider, offering only TLS 1.3 with AES-128-GCM.
fn aes_only() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    provider
}

/// Trusts exactly the receiver's certificate (both ends are this process).
#[derive(Debug)]
struct ThisCert {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ThisCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the receiver's certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
