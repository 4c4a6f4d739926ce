//! With the feature `static-ffmpeg` (the wheel, scripts/build-wheel.sh): ffmpeg-sys-next links
//! FFmpeg's static archives from `FFMPEG_DIR/lib` but not the system libraries those archives
//! call; they are the other `-l` entries of FFmpeg's own pkg-config files (`Libs` of a static-only
//! build, `Libs.private` of one with shared libraries too), linked here. Without the feature
//! (the development build, the system's shared FFmpeg) nothing happens.

use std::env;
use std::fs;
use std::path::PathBuf;

/// FFmpeg's libraries that the extension links (ffmpeg-next's features codec, format,
/// software-scaling, software-resampling); their own `-l` entries are not system libraries.
const FFMPEG_LIBS: [&str; 5] = ["avformat", "avcodec", "swscale", "swresample", "avutil"];

fn main() {
    println!("cargo:rerun-if-env-changed=FFMPEG_DIR");
    if env::var_os("CARGO_FEATURE_STATIC_FFMPEG").is_none() {
        return;
    }
    let Some(dir) = env::var_os("FFMPEG_DIR").map(PathBuf::from) else {
        panic!(
            "the feature static-ffmpeg links FFmpeg from FFMPEG_DIR, which is not set: \
             build the wheel with scripts/build-wheel.sh"
        );
    };
    let mut system_libs: Vec<String> = Vec::new();
    for lib in FFMPEG_LIBS {
        let pc = dir.join("lib/pkgconfig").join(format!("lib{lib}.pc"));
        println!("cargo:rerun-if-changed={}", pc.display());
        let text = fs::read_to_string(&pc).unwrap_or_else(|e| {
            panic!("{}: {e} (FFMPEG_DIR must be an FFmpeg install prefix)", pc.display())
        });
        let flags = text
            .lines()
            .filter_map(|line| line.strip_prefix("Libs:").or_else(|| line.strip_prefix("Libs.private:")));
        for flag in flags.flat_map(str::split_whitespace) {
            let name = match flag {
                "-pthread" => "pthread",
                _ => match flag.strip_prefix("-l") {
                    Some(name) => name,
                    None => continue,
                },
            };
            let ffmpeg_own = FFMPEG_LIBS.contains(&name);
            if !ffmpeg_own && !system_libs.iter().any(|l| l == name) {
                system_libs.push(name.to_string());
            }
        }
    }
    for name in system_libs {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
}
