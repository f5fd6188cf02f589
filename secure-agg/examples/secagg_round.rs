//! One whole SecAgg+ round in one process, timed per role, for the side-by-side comparison
//! with Flower's SecAgg+ (`benches/flower/run.sh`).
//!
//! ```text
//! cargo run --release -p secure-agg --example secagg_round -- \
//!     [--n 100] [--d 1000000] [--degree 10] [--t 6] [--dropout 0.1] \
//!     [--prg chacha20|chacha12|chacha8|aes] [--bits 32] [--json]
//! ```
//!
//! Clients: encode (clip, scale, round, mod 2^k) + the four client stages with k256 ECDSA
//! signatures. Server: the four server stages (signature checks, summing the masked vectors,
//! reconstruction, mask removal). A fraction `dropout` of the clients drops after sharing
//! keys (before sending its masked input), the case where the server must rebuild their
//! masking keys. One thread; each role's time is the thread's CPU time over its calls (from
//! /proc/thread-self/schedstat, nanoseconds), and the process CPU time is printed as a check.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k256::ecdsa::signature::{Signer, Verifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use secure_agg::{
    ClientRound, Codec, CodecConfig, MessageSigner, PrgKind, RoundBinding, SecAggParams,
    ServerRound, SignatureVerifier, pack_values, unpack_values,
};

struct Ecdsa(SigningKey);
impl MessageSigner for Ecdsa {
    fn sign(&self, m: &[u8]) -> Vec<u8> {
        let s: Signature = self.0.sign(m);
        s.to_bytes().to_vec()
    }
}
struct Registry(BTreeMap<u32, VerifyingKey>);
impl SignatureVerifier for Registry {
    fn verify(&self, c: u32, m: &[u8], s: &[u8]) -> bool {
        match (self.0.get(&c), Signature::from_slice(s)) {
            (Some(k), Ok(s)) => k.verify(m, &s).is_ok(),
            _ => false,
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
    let json = std::env::args().any(|a| a == "--json");

    let ids: Vec<u32> = (0..n).collect();
    let mut signers = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for &i in &ids {
        let mut seed = [0_u8; 32];
        seed[..4].copy_from_slice(&(i + 1).to_le_bytes());
        let sk = SigningKey::from_slice(&seed)?;
        keys.insert(i, *sk.verifying_key());
        signers.insert(i, Ecdsa(sk));
    }
    let registry = Registry(keys);
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
    for (&i, c) in &mut clients {
        time(&mut stage_time[1], &mut || {
            let p = c
                .handle_key_directory(dir.clone(), &registry, &signers[&i])
                .expect("share keys");
            uplink += p.to_bytes().len() as u64;
            packets.push((i, p));
        });
    }
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
             \"process_cpu_s\":{cpu:.2},\"wall_s\":{wall:.2}}}",
            degree + 1
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
        println!("  server CPU s                   {server_s:.4}");
        println!("  round CPU s (all clients + server) {total:.3}");
        println!(
            "  bytes/parameter (masked vector) {bytes_per_param:.3} (uplink all messages {uplink_per_param:.3})"
        );
        println!("  process CPU s {cpu:.2}, wall s {wall:.2}, max decode error {max_err:.2e}");
    }
    Ok(())
}
