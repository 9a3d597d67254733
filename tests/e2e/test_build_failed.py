"""A compiled algorithm that does not compile is never published (issue 7, point 1).

The manifest's build step runs at publish time; when the compiler fails the publish is
refused with BUILD_FAILED, whose stack trace is the compiler's output, and no version is
recorded. The fixed sources then publish and answer. For Go, C++, Rust and Java, each with
its real toolchain and runner library.
"""
import re
import shutil
import textwrap
from pathlib import Path

import pytest

import algomesh
from tests.conftest import EXAMPLES, ROOT

CONFORMANCE = ROOT / "tests" / "conformance" / "algorithms"


def _manifest(folder: Path, name: str, version: str, runtime: str, entrypoint: str, build: str) -> None:
    (folder / "algomesh.toml").write_text(
        f'name = "{name}"\nversion = "{version}"\nruntime = "{runtime}"\nentrypoint = "{entrypoint}"\nbuild = {build}\n')


def go(folder: Path, name: str, version: str, broken: bool) -> str:
    """A Go algorithm that upper-cases its text; broken, it calls a function that does not
    exist. Returns what the compiler says about that (a regex). So do the others."""
    folder.mkdir(parents=True, exist_ok=True)
    source = EXAMPLES / "polyglot" / "tokenize-go"
    (folder / "go.mod").write_text((source / "go.mod").read_text().replace("module tokenize", "module shout"))
    shutil.copy(source / "go.sum", folder / "go.sum")
    (folder / "main.go").write_text(textwrap.dedent(f"""\
        package main

        import (
        	"strings"

        	"algomesh.dev/runner"
        )

        func apply(call *runner.Call, in runner.Value) (runner.Value, error) {{
        	return runner.Text({"shout(in.Text())" if broken else "strings.ToUpper(in.Text())"}), nil
        }}

        func main() {{
        	_ = strings.ToUpper
        	runner.Serve(runner.Algorithm{{Apply: apply}})
        }}
        """))
    _manifest(folder, name, version, "go", "shout",
              """"go mod edit -replace=algomesh.dev=\\"$ALGOMESH_RUNNERS/go\\" && GOFLAGS='-mod=mod -buildvcs=false' go build -o shout ." """)
    return r"main\.go:\d+:\d+: undefined: shout"


def cpp(folder: Path, name: str, version: str, broken: bool) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(shout CXX)\nfind_package(algomesh_runner REQUIRED)\n"
        "algomesh_algorithm(shout main.cpp)\n")
    upper = "shout(input.as_text())" if broken else "upper(input.as_text())"
    (folder / "main.cpp").write_text(textwrap.dedent(f"""\
        #include <algomesh/runner.hpp>
        #include <cctype>
        #include <string>

        static std::string upper(std::string s) {{
          for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
          return s;
        }}

        struct Shout : algomesh::Algorithm {{
          algomesh::Value apply(algomesh::Call&, const algomesh::Value& input) override {{
            return {upper};
          }}
        }};

        int main() {{
          Shout algorithm;
          return algomesh::serve(algorithm);
        }}
        """))
    _manifest(folder, name, version, "cpp", "shout", """'sh "$ALGOMESH_RUNNERS/cpp/build.sh"'""")
    return r"main\.cpp:\d+:\d+: error: .shout. was not declared in this scope"  # ‘’ or '' by locale


def rust(folder: Path, name: str, version: str, broken: bool) -> str:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    source = EXAMPLES / "polyglot" / "normalize-rust"
    (folder / "Cargo.toml").write_text((source / "Cargo.toml").read_text().replace("poly-normalize", "build-shout"))
    (folder / "Cargo.lock").write_text((source / "Cargo.lock").read_text().replace('"poly-normalize"', '"build-shout"'))
    upper = "shout(&s)" if broken else "s.to_uppercase()"
    (folder / "src" / "main.rs").write_text(textwrap.dedent(f"""\
        use algomesh_runner::{{Algorithm, Call, Error, Value}};

        struct Shout;

        impl Algorithm for Shout {{
            fn apply(&self, _call: &Call, input: Value) -> Result<Value, Error> {{
                match input {{
                    Value::Text(s) => Ok(Value::Text({upper})),
                    _ => Err(Error::msg("send text")),
                }}
            }}
        }}

        fn main() {{
            algomesh_runner::serve(Shout)
        }}
        """))
    # (no --locked: the lock is the example's under another package name, which cargo re-sorts)
    _manifest(folder, name, version, "rust", "shout",
              """'ln -sfn "$ALGOMESH_RUNNERS/rust" runner && CARGO_TARGET_DIR="$ALGOMESH_BUILD_CACHE/rust/target" """
              """cargo build --release && cp "$ALGOMESH_BUILD_CACHE/rust/target/release/build-shout" shout'""")
    return r"cannot find function `shout` in this scope\n\s*--> src/main\.rs:\d+:\d+"


def java(folder: Path, name: str, version: str, broken: bool) -> str:
    (folder / "src" / "main" / "java").mkdir(parents=True, exist_ok=True)
    pom = (CONFORMANCE / "java" / "pom.xml").read_text()
    (folder / "pom.xml").write_text(pom.replace("<artifactId>conformance</artifactId>", "<artifactId>shout</artifactId>")
                                    .replace("<algomesh.main>Conformance</algomesh.main>", "<algomesh.main>Shout</algomesh.main>")
                                    .replace("conformance.jar", "shout.jar"))
    upper = "shout(text)" if broken else "text.toUpperCase()"
    (folder / "src" / "main" / "java" / "Shout.java").write_text(textwrap.dedent(f"""\
        import dev.algomesh.runner.Algorithm;
        import dev.algomesh.runner.Call;
        import dev.algomesh.runner.Runner;

        public final class Shout implements Algorithm {{
            @Override
            public Object apply(Call call, Object input) {{
                String text = (String) input;
                return {upper};
            }}

            public static void main(String[] args) {{
                Runner.serve(new Shout());
            }}
        }}
        """))
    _manifest(folder, name, version, "java", "shout.jar", """'sh "$ALGOMESH_RUNNERS/java/build.sh"'""")
    return r"Shout\.java:\[\d+,\d+\] cannot find symbol"


LANGUAGES = {"go": go, "cpp": cpp, "rust": rust, "java": java}


def _not_published(client, name: str) -> None:
    try:
        versions = client.versions(name)
    except algomesh.NotFoundError:
        return
    assert versions == [], versions


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_build_that_fails_is_refused_and_nothing_is_published(client, tmp_path, language):
    name = f"build/{language}-shout"
    broken = tmp_path / "broken"
    compiler_says = LANGUAGES[language](broken, name, "1.0.0", broken=True)

    with pytest.raises(algomesh.InvalidError) as e:
        client.publish(broken)
    err = e.value
    assert err.reason == "BUILD_FAILED", err
    assert err.metadata["algorithm"] == name and err.metadata["version"] == "1.0.0"
    assert re.search(compiler_says, err.stacktrace), err.stacktrace   # the compiler's own words, with file and line
    assert "exited with code" in err.message
    _not_published(client, name)
    with pytest.raises(algomesh.NotFoundError):
        client.algo(name).pipe("x").result

    # The same version, fixed: built, published, and it answers.
    fixed = tmp_path / "fixed"
    LANGUAGES[language](fixed, name, "1.0.0", broken=False)
    assert client.publish(fixed).created
    assert [v.manifest.version for v in client.versions(name)] == ["1.0.0"]
    assert client.algo(name).set_options(timeout=60).pipe("make some noise").result == "MAKE SOME NOISE"


@pytest.mark.parametrize("language", ["go", "cpp"])
def test_the_cli_refuses_it_too(mesh, client, tmp_path, language):
    name = f"build/{language}-cli"
    compiler_says = LANGUAGES[language](tmp_path / "broken", name, "1.0.0", broken=True)
    out = mesh.cli("publish", str(tmp_path / "broken"), timeout=600)
    stderr = out.stderr.decode()
    assert out.returncode == 1
    assert f"error: BUILD_FAILED: the build step of {name} 1.0.0 exited with code" in stderr, stderr
    assert re.search(compiler_says, stderr), stderr     # the compiler's own words
    _not_published(client, name)

    LANGUAGES[language](tmp_path / "fixed", name, "1.0.0", broken=False)
    out = mesh.cli("publish", str(tmp_path / "fixed"), timeout=600)
    assert out.returncode == 0, out.stderr.decode()
    assert [v.manifest.version for v in client.versions(name)] == ["1.0.0"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_version_runs_what_it_was_built_from(client, tmp_path, language):
    """A new version's changed sources are what it runs (a build cache shared between builds,
    like Cargo's target dir, must not hand it the previous version's program), and publishing
    a version again is a no-op, not a second build."""
    name = f"build/{language}-versions"
    LANGUAGES[language](tmp_path / "v1", name, "1.0.0", broken=False)
    assert client.publish(tmp_path / "v1").created
    LANGUAGES[language](tmp_path / "v2", name, "1.0.1", broken=False)
    for source in (tmp_path / "v2").rglob("*"):
        if source.suffix in (".go", ".cpp", ".rs", ".java"):   # 1.0.1 lower-cases instead
            text = source.read_text()
            for upper, lower in (("strings.ToUpper", "strings.ToLower"),
                                 ("toupper", "tolower"), ("to_uppercase", "to_lowercase"),
                                 ("toUpperCase", "toLowerCase")):
                text = text.replace(upper, lower)
            source.write_text(text)
    assert client.publish(tmp_path / "v2").created
    assert client.algo(f"{name}/1.0.0").set_options(timeout=60).pipe("Make Noise").result == "MAKE NOISE"
    assert client.algo(f"{name}/1.0.1").set_options(timeout=60).pipe("Make Noise").result == "make noise"
    again = client.publish(tmp_path / "v1")
    assert not again.created and again.version.manifest.version == "1.0.0"
