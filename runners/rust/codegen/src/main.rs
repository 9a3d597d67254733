use std::path::PathBuf;

fn main() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto = here.join("../../../proto");
    let out = here.join("../src/gen");
    std::fs::create_dir_all(&out).unwrap();
    let files = ["payload", "mesh", "runner"].map(|f| proto.join(format!("algomesh/v1/{f}.proto")));
    tonic_prost_build::configure()
        .out_dir(&out)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .codec_path("crate::codec::AlgomeshCodec")
        .compile_protos(&files, &[proto])
        .expect("protoc failed");
    println!("wrote {}", out.join("algomesh.v1.rs").display());
}
