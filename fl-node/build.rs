//! Generates the gRPC stubs of `daofl.v1.Federation` (client and server), once for both node
//! kinds; the messages themselves come from `fl_core::wire::pb` (compiled once, in fl-core).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../fl-core/proto/daofl.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../fl-core/proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".daofl.v1", "::fl_core::wire::pb")
        .compile_fds(fds)?;
    Ok(())
}
