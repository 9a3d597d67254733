// Generates the algomesh.v1 messages and the Mesh and Registry clients from the repository's
// proto/ ($ALGOMESH_PROTO overrides where it is) with protoc.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = std::env::var_os("ALGOMESH_PROTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../proto"));
    let files = ["algomesh/v1/mesh.proto", "algomesh/v1/registry.proto"].map(|f| proto.join(f));
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&files, &[proto])?;
    println!("cargo:rerun-if-env-changed=ALGOMESH_PROTO");
    Ok(())
}
