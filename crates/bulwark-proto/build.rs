//! Compiles `proto/bulwark/v1/hsm.proto`, `proto/bulwark/p11/v1/token.proto` (the PKCS#11
//! remote slot) and `proto/bulwark/bootstrap/v1/bootstrap.proto` (remote initialization) with
//! protox (pure Rust, no `protoc` needed) and generates the prost messages and tonic
//! client/server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/bulwark/v1/hsm.proto",
        "proto/bulwark/p11/v1/token.proto",
        "proto/bulwark/bootstrap/v1/bootstrap.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
