//! One whole SecAgg+ round in one process, timed per role, for the side-by-side comparison
//! with Flower's SecAgg+ (`benches/flower/run.sh`).
//!
//! ```text
//! cargo run --release -p secure-agg --example secagg_round -- \
//!     [--n 100] [--d 1000000] [--degree 10] [--t 6] [--dropout 0.1] \
//!     [--prg chacha20|chacha12|chacha8|aes] [--bits 32] [--ecdsa libsecp256k1|k256] \
//!     [--build LABEL] [--json]
//! ```
//!
//! Clients: encode (clip, scale, round, mod 2^k) + the four client stages with ECDSA
//! (secp256k1, SHA-256 prehash) signatures from libsecp256k1 (the `secp256k1` crate; k256,
//! pure Rust, with `--ecdsa k256`). Every client verifies every advertisement itself (no
//! verification result is shared between clients, each being a separate machine). Server: the four server stages (signature checks, summing the masked vectors,
//! reconstruction, mask removal). A fraction `dropout` of the clients drops after sharing
//! keys (before sending its masked input), the case where the server must rebuild their
//! masking keys. One thread; each role's time is the thread's CPU time over its calls (from
//! /proc/thread-self/schedstat, nanoseconds), and the process CPU time is printed as a check.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::cell::Cell;

use k256::ecdsa::signature::{Signer, Verifier};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use secp256k1::{Message, Secp256k1};
use secure_agg::{
    ClientRound, Codec, CodecConfig, MessageSigner, PrgKind, RoundBinding, SecAggParams,
    ServerRound, SignatureVerifier, pack_values, unpack_values,
};
use sha2::{Digest, Sha256};

/// ECDSA over secp256k1 with a SHA-256 prehash, 64-byte compact signatures, from either
/// library (the signatures are interchangeable: both sign low-s).
#[derive(Clone, Copy, PartialEq)]
enum Ecdsa {
    K256,
    Libsecp256k1,
}

struct Signer1 {
    ecdsa: Ecdsa,
    k256: k256::ecdsa::SigningKey,
    secp: secp256k1::SecretKey,
}
impl MessageSigner for Signer1 {
    fn sign(&self, m: &[u8]) -> Vec<u8> {
        match self.ecdsa {
            Ecdsa::K256 => {
                let s: k256::ecdsa::Signature = self.k256.sign(m);
                s.to_bytes().to_vec()
            }
            Ecdsa::Libsecp256k1 => {
                let digest = Message::from_digest(Sha256::digest(m).into());
                SECP.with(|c| c.sign_ecdsa(digest, &self.secp))
                    .serialize_compact()
                    .to_vec()
            }
        }
    }
}

impl Ecdsa {
    fn name(self) -> &'static str {
        match self {
            Ecdsa::K256 => "k256",
            Ecdsa::Libsecp256k1 => "libsecp256k1",
        }
    }
}

thread_local! {
    static SECP: Secp256k1<secp256k1::All> = Secp256k1::new();
}

/// The public keys of all clients; counts the verifications it does.
struct Registry {
    ecdsa: Ecdsa,
    k256: BTreeMap<u32, k256::ecdsa::VerifyingKey>,
    secp: BTreeMap<u32, secp256k1::PublicKey>,
    count: Cell<u64>,
}
impl SignatureVerifier for Registry {
    fn verify(&self, c: u32, m: &[u8], s: &[u8]) -> bool {
        self.count.set(self.count.get() + 1);
        match self.ecdsa {
            Ecdsa::K256 => match (self.k256.get(&c), k256::ecdsa::Signature::from_slice(s)) {
                (Some(k), Ok(s)) => k.verify(m, &s).is_ok(),
                _ => false,
            },
            Ecdsa::Libsecp256k1 => {
                match (
                    self.secp.get(&c),
                    secp256k1::ecdsa::Signature::from_compact(s),
                ) {
                    (Some(k), Ok(s)) => {
                        let digest = Message::from_digest(Sha256::digest(m).into());
                        SECP.with(|ctx| ctx.verify_ecdsa(digest, &s, k).is_ok())
                    }
                    _ => false,
                }
            }
        }
    }
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn process_cpu_seconds() -> f64 {
    // utime + stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 Hz).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some((rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// CPU time of the calling thread (first field of /proc/thread-self/schedstat, in ns); wall
/// time where that file does not exist.
fn thread_cpu() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| START.get_or_init(Instant::now).elapsed())
}

fn time(acc: &mut Duration, f: &mut dyn FnMut()) {
    let t0 = thread_cpu();
    f();
    *acc += thread_cpu().saturating_sub(t0);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = arg("--n", 100);
    let d: usize = arg("--d", 1_000_000);
    let degree: usize = arg("--degree", 10);
    let t: usize = arg("--t", 6);
    let dropout: f64 = arg("--dropout", 0.1);
    let bits: u32 = arg("--bits", 32);
    let prg = match arg("--prg", String::from("chacha20")).as_str() {
        "chacha12" => PrgKind::ChaCha12,
        "chacha8" => PrgKind::ChaCha8,
        "aes" => PrgKind::Aes256Ctr,
        _ => PrgKind::ChaCha20,
    };
    let ecdsa = match arg("--ecdsa", String::from("libsecp256k1")).as_str() {
        "k256" => Ecdsa::K256,
        _ => Ecdsa::Libsecp256k1,
    };
    let json = std::env::args().any(|a| a == "--json");
    // A label for the build (e.g. compiled with extra target features), echoed in the JSON.
    let build: String = arg("--build", String::new());

    let ids: Vec<u32> = (0..n).collect();
    let mut signers = BTreeMap::new();
    let mut registry = Registry {
        ecdsa,
        k256: BTreeMap::new(),
        secp: BTreeMap::new(),
        count: Cell::new(0),
    };
    for &i in &ids {
        let mut seed = [0_u8; 32];
        seed[..4].copy_from_slice(&(i + 1).to_le_bytes());
        let k256 = k256::ecdsa::SigningKey::from_slice(&seed)?;
        let secp = secp256k1::SecretKey::from_byte_array(seed)?;
        registry.k256.insert(i, *k256.verifying_key());
        registry.secp.insert(
            i,
            secp256k1::PublicKey::from_secret_key(&Secp256k1::new(), &secp),
        );
        signers.insert(i, Signer1 { ecdsa, k256, secp });
    }
    let registry = registry;
    let codec = Codec::new(CodecConfig::for_clients(n, 1.0, bits)?, d)?;
    let params = SecAggParams {
        modulus_bits: bits,
        vector_len: codec.encoded_len(),
        degree,
        threshold: t,
        prg,
    };
    let binding = RoundBinding {
        session: [1; 32],
        round: 1,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let update: Vec<f32> = (0..d).map(|i| ((i % 1000) as f32 - 500.0) * 1e-6).collect();
    let n_drop = (f64::from(n) * dropout).round() as u32;
    let dropped: Vec<u32> = (0..n_drop).map(|k| k * n / n_drop.max(1)).collect();

    let cpu0 = process_cpu_seconds();
    let wall0 = Instant::now();
    // Client CPU per stage: advertise, share keys, encode + mask, unmask.
    let mut stage_time = [Duration::ZERO; 4];
    let mut server_time = Duration::ZERO;
    let mut uplink = 0_u64;
    let mut masked_bytes = 0_u64;

    let mut clients: BTreeMap<u32, ClientRound> = BTreeMap::new();
    let mut server = None;
    time(&mut server_time, &mut || {
        server = Some(ServerRound::new(binding, params, &ids).expect("server"));
    });
    let mut server = server.expect("server");
    let mut ads = Vec::new();
    for &i in &ids {
        time(&mut stage_time[0], &mut || {
            let mut c = ClientRound::new(binding, params, i, &ids, &mut rng).expect("client");
            let ad = c.advertise(&signers[&i]).expect("advertise");
            uplink += ad.to_bytes().len() as u64;
            ads.push((i, ad));
            clients.insert(i, c);
        });
    }
    let mut dir = None;
    time(&mut server_time, &mut || {
        for (i, ad) in ads.drain(..) {
            server.handle_advertisement(i, ad, &registry).expect("ad");
        }
        dir = Some(server.close_advertise().expect("directory"));
    });
    let dir = dir.expect("directory");
    let mut packets = Vec::new();
    let server_verifications0 = registry.count.get();
    for (&i, c) in &mut clients {
        time(&mut stage_time[1], &mut || {
            let p = c
                .handle_key_directory(dir.clone(), &registry, &signers[&i])
                .expect("share keys");
            uplink += p.to_bytes().len() as u64;
            packets.push((i, p));
        });
    }
    let client_verifications = registry.count.get();
    let mut inbound = Vec::new();
    time(&mut server_time, &mut || {
        for (i, p) in packets.drain(..) {
            server
                .handle_share_packets(i, p, &registry)
                .expect("packets");
        }
        inbound = server.close_share_keys().expect("inbound");
    });
    let mut requests = Vec::new();
    for (i, shares) in inbound {
        if dropped.contains(&i) {
            continue;
        }
        let c = clients.get_mut(&i).expect("client");
        let mut out = None;
        time(&mut stage_time[2], &mut || {
            // Encode and mask in one pass (`handle_shares` masks an encoded vector instead).
            let (input, header) = c
                .handle_shares_encoding(
                    shares.clone(),
                    &codec,
                    &update,
                    &[],
                    &mut rng,
                    &signers[&i],
                )
                .expect("encode and mask");
            let packed = pack_values(&input, bits);
            uplink += (header.to_bytes().len() + packed.len()) as u64;
            masked_bytes += packed.len() as u64;
            out = Some((header, packed));
        });
        let (header, packed) = out.expect("masked");
        time(&mut server_time, &mut || {
            let masked = unpack_values(&packed, bits, codec.encoded_len()).expect("unpack");
            server
                .handle_masked_input(i, header.clone(), &masked, &registry)
                .expect("masked input");
        });
    }
    time(&mut server_time, &mut || {
        requests = server.close_masked_input().expect("requests");
    });
    let mut responses = Vec::new();
    for (i, req) in requests {
        let c = clients.get_mut(&i).expect("client");
        time(&mut stage_time[3], &mut || {
            let r = c
                .handle_unmask_request(req.clone(), &signers[&i])
                .expect("unmask");
            uplink += r.to_bytes().len() as u64;
            responses.push((i, r));
        });
    }
    time(&mut server_time, &mut || {
        for (i, r) in responses.drain(..) {
            server
                .handle_unmask_response(i, r, &registry)
                .expect("response");
        }
    });
    let t0 = thread_cpu();
    let out = server.finish()?;
    server_time += thread_cpu().saturating_sub(t0);
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu0;

    // Check the result: survivors × the (quantized) update.
    let decoded = codec.decode_sum(&out.sum, d)?;
    let survivors = out.survivors.len() as f64;
    let max_err = decoded
        .iter()
        .zip(&update)
        .map(|(s, &u)| (s / survivors - f64::from(u)).abs())
        .fold(0.0, f64::max);
    assert!(max_err < 2.0 / CodecConfig::for_clients(n, 1.0, bits)?.scale + 1e-9);

    // The clients verify only in `handle_key_directory`; every other check is the server's.
    let server_verifications = registry.count.get() - client_verifications + server_verifications0;
    let client_verifications = client_verifications - server_verifications0;
    // CPU per verification, measured apart (the same verifier on a real 135-byte message),
    // so the verification share of each role is count × cost.
    let verify_cost = {
        let m = [7_u8; 135];
        let sig = signers[&0].sign(&m);
        let reps = 2000;
        let t0 = thread_cpu();
        for _ in 0..reps {
            assert!(registry.verify(0, &m, &sig));
        }
        thread_cpu().saturating_sub(t0).as_secs_f64() / f64::from(reps)
    };
    let verify_per_client = client_verifications as f64 / f64::from(n) * verify_cost;
    let client_time: Duration = stage_time.iter().sum();
    let per_client = client_time.as_secs_f64() / f64::from(n);
    let server_s = server_time.as_secs_f64();
    let total = client_time.as_secs_f64() + server_s;
    let bytes_per_param = masked_bytes as f64 / f64::from(n - n_drop) / d as f64;
    let uplink_per_param = uplink as f64 / f64::from(n - n_drop) / d as f64;
    if json {
        println!(
            "{{\"impl\":\"daofl\",\"prg\":\"{prg:?}\",\"bits\":{bits},\"n\":{n},\"d\":{d},\
             \"k\":{},\"t\":{t},\"dropped\":{n_drop},\"client_cpu_s\":{per_client:.4},\
             \"server_cpu_s\":{server_s:.4},\"round_cpu_s\":{total:.4},\
             \"bytes_per_param\":{bytes_per_param:.4},\"uplink_bytes_per_param\":{uplink_per_param:.4},\
             \"process_cpu_s\":{cpu:.2},\"wall_s\":{wall:.2},\"ecdsa\":\"{}\",\"build\":\"{build}\",\
             \"verify_s\":{verify_cost:.7},\"client_verify_s\":{verify_per_client:.4},\
             \"client_share_keys_s\":{:.4},\"client_encode_mask_s\":{:.4}}}",
            degree + 1,
            ecdsa.name(),
            stage_time[1].as_secs_f64() / f64::from(n),
            stage_time[2].as_secs_f64() / f64::from(n),
        );
    } else {
        println!(
            "daofl SecAgg+ ({prg:?}, k = {bits} bits): n {n}, d {d}, shares {} (degree {degree}), \
             t {t}, {n_drop} dropped",
            degree + 1
        );
        println!(
            "  client CPU s (mean per client) {per_client:.4} = advertise {:.4} + share keys {:.4} \
             + encode & mask {:.4} + unmask {:.4} (stage totals / n)",
            stage_time[0].as_secs_f64() / f64::from(n),
            stage_time[1].as_secs_f64() / f64::from(n),
            stage_time[2].as_secs_f64() / f64::from(n),
            stage_time[3].as_secs_f64() / f64::from(n),
        );
        println!(
            "  signature verification ({}): {:.1} per client, {:.1} by the server, {:.1} us each: \
             {verify_per_client:.4} s per client, {:.4} s on the server",
            ecdsa.name(),
            client_verifications as f64 / f64::from(n),
            server_verifications,
            verify_cost * 1e6,
            server_verifications as f64 * verify_cost,
        );
        println!("  server CPU s                   {server_s:.4}");
        println!("  round CPU s (all clients + server) {total:.3}");
        println!(
            "  bytes/parameter (masked vector) {bytes_per_param:.3} (uplink all messages {uplink_per_param:.3})"
        );
        println!("  process CPU s {cpu:.2}, wall s {wall:.2}, max decode error {max_err:.2e}");
    }
    Ok(())
}
