//! Guest kernels: resolve Debian's current `-unsigned` image package for a kernel series,
//! download it once with `apt-get download`, unpack only its `/boot`, and pull the ELF `vmlinux`
//! out of the bzImage so QEMU can boot it through the PVH entry (see `shared/docs/qemu.md`).
//!
//! Nothing is installed on the host: the `.deb` is only unpacked with `dpkg-deb | tar`. Everything
//! lands in the cache directory, so a second run resolves the name with `apt-cache` (local) and
//! downloads nothing.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Debian package the image came from, e.g. `linux-image-6.1.0-56-amd64-unsigned`.
    pub package: String,
    /// Debian version of that package, e.g. `6.1.192-2`.
    pub version: String,
    /// Kernel release (`uname -r`), e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// What QEMU's `-kernel` gets: the extracted ELF vmlinux, or the bzImage as a fallback.
    pub image: PathBuf,
    /// Whether `image` is the ELF vmlinux booted through PVH.
    pub pvh: bool,
}

/// The meta package whose `Depends:` names the current image of a kernel series.
fn meta_package(series: &str) -> Result<&'static str> {
    match series {
        "6.1" => Ok("linux-image-amd64"),
        "6.12" => Ok("linux-image-6.12-amd64"),
        other => bail!("unknown kernel series {other:?} (expected 6.1 or 6.12)"),
    }
}

/// Returns the kernel of `series`, downloading and extracting it into `cache` if needed.
///
/// If resolving or downloading fails (package lists missing or stale: the mirror dropped the
/// version they name), `apt-get update` runs once and everything is retried; if that fails
/// too, the newest kernel of the series already in the cache is used, with a warning.
pub fn prepare(cache: &Path, series: &str) -> Result<Kernel> {
    let kernels = cache.join("kernels");
    let start = std::time::Instant::now();
    let (package, version, dir) = match fetch(cache, series) {
        Ok(found) => found,
        Err(first) => {
            eprintln!("vm-test: {first:#}; refreshing apt's package lists");
            match apt_update().and_then(|()| fetch(cache, series)) {
                Ok(found) => found,
                Err(e) => {
                    let (package, version) = newest_cached(&kernels, series)
                        .ok_or_else(|| e.context(format!("{first:#}")))?;
                    eprintln!("vm-test: using the cached {package} {version} instead");
                    let dir = kernels.join(format!("{package}_{version}"));
                    (package, version, dir)
                }
            }
        }
    };
    let fresh = !dir.join("vmlinux").is_file();
    let (release, bzimage) = find_bzimage(&dir.join("boot"))?;
    let vmlinux = dir.join("vmlinux");
    let pvh_config = fs::read_to_string(dir.join("boot").join(format!("config-{release}")))
        .map(|c| c.lines().any(|l| l == "CONFIG_PVH=y"))
        .unwrap_or(false);
    let (image, pvh) = if !pvh_config {
        eprintln!("vm-test: {package} lacks CONFIG_PVH=y; booting the bzImage");
        (bzimage, false)
    } else if vmlinux.is_file() {
        (vmlinux, true)
    } else {
        match extract_vmlinux(&bzimage, &vmlinux) {
            Ok(()) => (vmlinux, true),
            Err(e) => {
                eprintln!("vm-test: {e:#}; booting the bzImage instead (slower)");
                (bzimage, false)
            }
        }
    };
    if fresh {
        eprintln!(
            "vm-test: {package} prepared in {:.1} s (cached in {})",
            start.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    Ok(Kernel {
        package,
        version,
        release,
        image,
        pvh,
    })
}

/// Resolves the current image of `series` and makes sure its `/boot` is unpacked in the
/// cache; returns the package, its version and its cache directory.
fn fetch(cache: &Path, series: &str) -> Result<(String, String, PathBuf)> {
    let (package, version) = resolve(series)?;
    let dir = cache.join("kernels").join(format!("{package}_{version}"));
    if !dir.join("boot").is_dir() {
        let deb = download(cache, &package, &version)?;
        unpack_boot(&deb, &dir)?;
    }
    Ok((package, version, dir))
}

/// `apt-get update`, once the package lists turned out missing or stale.
fn apt_update() -> Result<()> {
    let status = Command::new("apt-get")
        .args(["update", "-q"])
        .status()
        .context("starting apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed ({status})");
    }
    Ok(())
}

/// Asks apt for the `-unsigned` image package of `series` and its candidate version.
fn resolve(series: &str) -> Result<(String, String)> {
    let meta = meta_package(series)?;
    let image = depends_image(meta, series)?
        .with_context(|| format!("apt knows no linux-image-{series}.* dependency of {meta}"))?;
    let package = format!("{image}-unsigned");
    let out = Command::new("apt-cache")
        .args(["policy", &package])
        .output()
        .context("starting apt-cache policy")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .with_context(|| format!("apt has no candidate version of {package}"))?;
    Ok((package, version.to_string()))
}

/// The `linux-image-<series>.*` package that `meta` depends on, if apt knows `meta`.
fn depends_image(meta: &str, series: &str) -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(["depends", meta])
        .output()
        .context("starting apt-cache depends")?;
    if !out.status.success() {
        return Ok(None);
    }
    let prefix = format!("linux-image-{series}.");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with(&prefix) && !p.ends_with("-dbg"))
        .map(str::to_string))
}

/// The newest kernel of `series` already unpacked in the cache, for offline runs.
fn newest_cached(kernels: &Path, series: &str) -> Option<(String, String)> {
    let prefix = format!("linux-image-{series}.");
    let mut found: Vec<(String, String)> = fs::read_dir(kernels)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && kernels.join(n).join("boot").is_dir())
        .filter_map(|n| {
            n.split_once('_')
                .map(|(p, v)| (p.to_string(), v.to_string()))
        })
        .collect();
    // Good enough for choosing among ABI numbers of one series; `dpkg --compare-versions`
    // would be exact but this is only the offline fallback.
    found.sort_by_key(|(p, v)| (numeric_key(p), numeric_key(v)));
    found.pop()
}

/// Splits a string into its runs of digits, for a rough version ordering.
fn numeric_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Downloads `package` `version` into `cache/debs/` unless it is already there.
fn download(cache: &Path, package: &str, version: &str) -> Result<PathBuf> {
    let debs = cache.join("debs");
    let deb = debs.join(format!("{package}_{version}.deb"));
    if deb.is_file() {
        return Ok(deb);
    }
    let partial = debs.join(format!(".partial-{package}"));
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    eprintln!("vm-test: downloading {package} {version}");
    let status = Command::new("apt-get")
        .current_dir(&partial)
        // As root, apt would hand the download to its `_apt` sandbox user, which cannot write
        // into the cache and says so; the file is verified against the signed index either way.
        .args(["-o", "APT::Sandbox::User=root", "download", "-q"])
        .arg(format!("{package}={version}"))
        .status()
        .context("starting apt-get download")?;
    if !status.success() {
        bail!("apt-get download {package}={version} failed ({status})");
    }
    let got = fs::read_dir(&partial)
        .with_context(|| format!("listing {}", partial.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", partial.display()))?;
    fs::rename(&got, &deb).with_context(|| format!("moving the .deb to {}", deb.display()))?;
    fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    Ok(deb)
}

/// Unpacks only `./boot` of `deb` into `dir/boot` (via a temporary directory, so an
/// interrupted unpack is never mistaken for a complete one).
fn unpack_boot(deb: &Path, dir: &Path) -> Result<()> {
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting dpkg-deb")?;
    let tar_in = dpkg.stdout.take().context("dpkg-deb has no stdout pipe")?;
    let tar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(&tmp)
        .arg("./boot")
        .stdin(tar_in)
        .status()
        .context("starting tar")?;
    let dpkg = dpkg.wait().context("waiting for dpkg-deb")?;
    if !dpkg.success() || !tar.success() {
        bail!(
            "unpacking /boot of {} failed (dpkg-deb {dpkg}, tar {tar})",
            deb.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::rename(tmp.join("boot"), dir.join("boot"))
        .with_context(|| format!("moving boot/ into {}", dir.display()))?;
    fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    Ok(())
}

/// Finds `vmlinuz-<release>` in an unpacked `/boot`.
fn find_bzimage(boot: &Path) -> Result<(String, PathBuf)> {
    for entry in fs::read_dir(boot).with_context(|| format!("listing {}", boot.display()))? {
        let entry = entry.with_context(|| format!("listing {}", boot.display()))?;
        if let Some(release) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("vmlinuz-"))
        {
            return Ok((release.to_string(), entry.path()));
        }
    }
    bail!("no vmlinuz-* in {}", boot.display())
}

/// Compression formats Debian uses for the bzImage payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Xz,
    Zstd,
}

/// Locates the compressed kernel inside a bzImage from its boot protocol header: the
/// protected-mode code starts after `setup_sects + 1` sectors, and `payload_offset` /
/// `payload_length` (boot protocol 2.08+) delimit the compressed vmlinux within it.
fn payload(bz: &[u8]) -> Result<(&[u8], Compression)> {
    let u32_at = |off: usize| -> Result<usize> {
        let b = bz
            .get(off..off + 4)
            .context("bzImage too short for its header")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if bz.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no HdrS boot header)");
    }
    let setup_sects = match bz.get(0x1f1).copied() {
        Some(0) => 4,
        Some(n) => usize::from(n),
        None => bail!("bzImage too short for its header"),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let len = u32_at(0x24c)?;
    let data = bz
        .get(start..start + len)
        .context("bzImage payload lies outside the file")?;
    let compression = if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        bail!("bzImage payload is neither xz nor zstd");
    };
    Ok((data, compression))
}

/// Decompresses the bzImage payload into `out` with the `xz` or `zstd` tool and checks that
/// the result is an ELF file.
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let bz = fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let (data, compression) = payload(&bz).with_context(|| format!("{}", bzimage.display()))?;
    // The kernel build appends the 4-byte uncompressed size after the stream; drop it so
    // both tools see exactly one stream.
    let data = &data[..data.len().saturating_sub(4)];
    let compressed = out.with_extension(match compression {
        Compression::Xz => "xz",
        Compression::Zstd => "zst",
    });
    fs::write(&compressed, data).with_context(|| format!("writing {}", compressed.display()))?;
    let tmp = out.with_extension("partial");
    let tmp_file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let tool = match compression {
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
    };
    let status = Command::new(tool)
        .args(["-d", "-c", "-q"])
        .arg(&compressed)
        .stdout(tmp_file)
        .status()
        .with_context(|| {
            format!("starting {tool} (install xz-utils/zstd: cargo xtask setup --vm)")
        })?;
    let _ = fs::remove_file(&compressed);
    let head = fs::read(&tmp)
        .map(|b| b.get(..4) == Some(b"\x7fELF"))
        .unwrap_or(false);
    if !status.success() || !head {
        let _ = fs::remove_file(&tmp);
        bail!(
            "{tool} could not extract an ELF vmlinux from {} ({status})",
            bzimage.display()
        );
    }
    fs::rename(&tmp, out).with_context(|| format!("moving vmlinux to {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_key_orders_abi_numbers() {
        assert!(
            numeric_key("linux-image-6.1.0-56-amd64-unsigned")
                > numeric_key("linux-image-6.1.0-9-amd64-unsigned")
        );
    }

    #[test]
    fn payload_rejects_non_bzimage() {
        assert!(payload(&[0u8; 1024]).is_err());
    }
}
