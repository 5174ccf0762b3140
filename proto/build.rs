//! Generates the Rust types (and, with the `grpc` feature, the gRPC stubs)
//! from `proto/netaware/v1/*.proto`.
//!
//! `protox` parses the .proto files in pure Rust, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/netaware/v1/netaware.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    #[cfg(feature = "grpc")]
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    #[cfg(not(feature = "grpc"))]
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
