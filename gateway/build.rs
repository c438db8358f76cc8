//! Compiles `proto/mouthmap.proto` (with protox, a protobuf compiler in
//! Rust: building needs no `protoc`) into the gRPC service and messages, and
//! keeps its descriptor set for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/mouthmap.proto");
    let fds = protox::compile(["mouthmap.proto"], ["../proto"])?;
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    std::fs::write(out.join("mouthmap_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
