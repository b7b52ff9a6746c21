//! Guest kernels: resolve Debian's current image package for a kernel series, download it once
//! with `apt-get download`, unpack only its `/boot`, and pull the ELF `vmlinux` out of the
//! bzImage so QEMU can boot it through the PVH entry (see `shared/docs/qemu.md`).
//!
//! 6.1 and 6.12 come from the host's own apt sources (bookworm and bookworm-security: their
//! `-unsigned` images). 6.18 comes from trixie-backports and 5.10 from bullseye and
//! bullseye-security, which the host's sources do not list: a private apt configuration in the cache (its own `sources.list` and package lists, checked
//! against Debian's archive keyring like any apt source) finds and fetches it, and the host's apt
//! state is never touched.
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

/// Where apt finds a series, and how its image package is named there.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The host's own apt sources; the meta package whose `Depends:` names the current image
    /// (its `-unsigned` twin is what gets downloaded).
    Host { meta: &'static str },
    /// A Debian suite the host does not list, through a private apt configuration in the
    /// cache (with its `-security` suite when `security`). Without `meta`, the image is the
    /// newest `linux-image-<series>.<n>+<abi>-amd64` of the suite (backports carry no
    /// per-series meta package and no `-unsigned` twins); with it, as for the host's sources,
    /// the `-unsigned` twin of the image `meta` depends on.
    Suite {
        suite: &'static str,
        security: bool,
        meta: Option<&'static str>,
    },
}

/// The Debian archive a series comes from.
fn source(series: &str) -> Result<Source> {
    match series {
        "6.1" => Ok(Source::Host {
            meta: "linux-image-amd64",
        }),
        "6.12" => Ok(Source::Host {
            meta: "linux-image-6.12-amd64",
        }),
        "6.18" => Ok(Source::Suite {
            suite: "trixie-backports",
            security: false,
            meta: None,
        }),
        // Debian 11's kernel: the seed's era (32-page charge batch, no memcg tracepoints).
        "5.10" => Ok(Source::Suite {
            suite: "bullseye",
            security: true,
            meta: Some("linux-image-amd64"),
        }),
        other => bail!("unknown kernel series {other:?} (expected 5.10, 6.1, 6.12 or 6.18)"),
    }
}

/// Debian's mirror, its security mirror, and the keyring their Release files are checked
/// against (the bookworm keyring package also carries the bullseye and trixie keys).
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The apt options a series needs: none for the host's sources; for another suite, a private
/// configuration under `cache/apt/<suite>` (created on first use) that replaces the host's
/// source list, package lists, package cache and pinning, so the host's apt is untouched.
fn apt_options(cache: &Path, src: &Source) -> Result<Vec<String>> {
    let Source::Suite {
        suite, security, ..
    } = src
    else {
        return Ok(Vec::new());
    };
    let root = cache.join("apt").join(suite);
    let lists = root.join("lists");
    let empty = root.join("empty");
    let pkgcache = root.join("cache");
    for dir in [
        lists.join("partial"),
        empty.clone(),
        pkgcache.join("archives/partial"),
    ] {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let list = root.join("sources.list");
    let mut line = format!("deb [signed-by={KEYRING}] {MIRROR} {suite} main\n");
    if *security {
        line.push_str(&format!(
            "deb [signed-by={KEYRING}] {SECURITY_MIRROR} {suite}-security main\n"
        ));
    }
    if fs::read_to_string(&list).ok().as_deref() != Some(line.as_str()) {
        fs::write(&list, &line).with_context(|| format!("writing {}", list.display()))?;
    }
    let p = |x: &Path| x.display().to_string();
    Ok(vec![
        format!("Dir::Etc::SourceList={}", p(&list)),
        format!("Dir::Etc::SourceParts={}", p(&empty)),
        format!("Dir::Etc::Preferences={}", p(&empty.join("none"))),
        format!("Dir::Etc::PreferencesParts={}", p(&empty)),
        format!("Dir::State::Lists={}", p(&lists)),
        format!("Dir::Cache={}", p(&pkgcache)),
        "Acquire::Languages=none".to_string(),
        "APT::Architectures=amd64".to_string(),
        // As root, apt would hand downloads to its `_apt` sandbox user, which cannot write
        // into the cache; files are verified against the signed index either way.
        "APT::Sandbox::User=root".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect())
}

/// Returns the kernel of `series`, downloading and extracting it into `cache` if needed.
///
/// If resolving or downloading fails (package lists missing or stale: the mirror dropped the
/// version they name), `apt-get update` runs once and everything is retried; if that fails
/// too, the newest kernel of the series already in the cache is used, with a warning.
pub fn prepare(cache: &Path, series: &str) -> Result<Kernel> {
    let kernels = cache.join("kernels");
    let start = std::time::Instant::now();
    let src = source(series)?;
    let apt = apt_options(cache, &src)?;
    let (package, version, dir) = match fetch(cache, series, &src, &apt) {
        Ok(found) => found,
        Err(first) => {
            eprintln!("vm-test: {first:#}; refreshing apt's package lists");
            match apt_update(&apt).and_then(|()| fetch(cache, series, &src, &apt)) {
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
fn fetch(
    cache: &Path,
    series: &str,
    src: &Source,
    apt: &[String],
) -> Result<(String, String, PathBuf)> {
    let (package, version) = resolve(series, src, apt)?;
    let dir = cache.join("kernels").join(format!("{package}_{version}"));
    if !dir.join("boot").is_dir() {
        let deb = download(cache, &package, &version, apt)?;
        unpack_boot(&deb, &dir)?;
    }
    Ok((package, version, dir))
}

/// `apt-get update`, once the package lists turned out missing or stale.
fn apt_update(apt: &[String]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(apt)
        .args(["update", "-q"])
        .status()
        .context("starting apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed ({status})");
    }
    Ok(())
}

/// Asks apt for the image package of `series` and its candidate version.
fn resolve(series: &str, src: &Source, apt: &[String]) -> Result<(String, String)> {
    let package = match src {
        Source::Host { meta }
        | Source::Suite {
            meta: Some(meta), ..
        } => {
            let image = depends_image(meta, series, apt)?.with_context(|| {
                format!("apt knows no linux-image-{series}.* dependency of {meta}")
            })?;
            format!("{image}-unsigned")
        }
        Source::Suite {
            suite, meta: None, ..
        } => newest_image(series, apt)?
            .with_context(|| format!("apt knows no linux-image-{series}.*-amd64 in {suite}"))?,
    };
    let out = Command::new("apt-cache")
        .args(apt)
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
fn depends_image(meta: &str, series: &str, apt: &[String]) -> Result<Option<String>> {
    let out = Command::new("apt-cache")
        .args(apt)
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

/// The newest plain `linux-image-<series>.<n>+<abi>-amd64` package apt knows (not the
/// `-cloud`/`-rt` flavours, not `-dbg`).
fn newest_image(series: &str, apt: &[String]) -> Result<Option<String>> {
    let prefix = format!("linux-image-{series}.");
    let out = Command::new("apt-cache")
        .args(apt)
        .args(["pkgnames", &prefix])
        .output()
        .context("starting apt-cache pkgnames")?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(pick_image(&String::from_utf8_lossy(&out.stdout), series))
}

/// Of the package names in `text` (one per line), the plain amd64 image of `series` with the
/// highest point release.
fn pick_image(text: &str, series: &str) -> Option<String> {
    let prefix = format!("linux-image-{series}.");
    text.lines()
        .map(str::trim)
        .filter(|n| {
            n.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix("-amd64"))
                // `<point>+<abi>`: `15+deb13`; rejects `15+deb13-cloud`, `15+deb13-rt`.
                .and_then(|rest| rest.split_once('+'))
                .is_some_and(|(point, abi)| {
                    point.chars().all(|c| c.is_ascii_digit())
                        && !point.is_empty()
                        && abi.chars().all(|c| c.is_ascii_alphanumeric())
                })
        })
        .max_by_key(|n| numeric_key(n))
        .map(str::to_string)
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
fn download(cache: &Path, package: &str, version: &str, apt: &[String]) -> Result<PathBuf> {
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
        .args(apt)
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
    untar(deb, &tmp, &["./boot"])?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::rename(tmp.join("boot"), dir.join("boot"))
        .with_context(|| format!("moving boot/ into {}", dir.display()))?;
    fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    Ok(())
}

/// The modules a swap device needs in the guest (`zram` and the modules its `.modinfo` says it
/// depends on, dependencies first), unpacked once from the kernel's `.deb` into
/// `kernels/<package>_<version>/modules/` and decompressed (busybox's `insmod` hands the file
/// to the kernel as it is; Debian compresses 6.12+ modules with xz). The package has no
/// `modules.dep` (depmod makes it at install), hence `.modinfo`. The guest builds its swap on
/// a zram device: in RAM, nothing on the host (issue 13).
pub fn swap_modules(cache: &Path, kernel: &Kernel) -> Result<Vec<PathBuf>> {
    let dir = cache
        .join("kernels")
        .join(format!("{}_{}", kernel.package, kernel.version))
        .join("modules");
    if let Ok(text) = fs::read_to_string(dir.join("order")) {
        return Ok(text.lines().map(|n| dir.join(n)).collect());
    }
    let deb = cache
        .join("debs")
        .join(format!("{}_{}.deb", kernel.package, kernel.version));
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let members = list(&deb)?;
    let mut names = Vec::new();
    add_module(&deb, &members, &tmp, "zram", &mut names, 0)?;
    fs::write(tmp.join("order"), names.join("\n") + "\n").context("writing the module order")?;
    // Only the decompressed modules and the order stay.
    for e in fs::read_dir(&tmp).with_context(|| format!("listing {}", tmp.display()))? {
        let p = e?.path();
        if p.is_dir() {
            fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::rename(&tmp, &dir).with_context(|| format!("moving modules into {}", dir.display()))?;
    Ok(names.iter().map(|n| dir.join(n)).collect())
}

/// Unpacks module `name` from `deb` into `tmp` as `<name>.ko` (decompressed), after the
/// modules it depends on; appends the file names to `names` in load order.
fn add_module(
    deb: &Path,
    members: &[String],
    tmp: &Path,
    name: &str,
    names: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    let file = format!("{name}.ko");
    if names.contains(&file) {
        return Ok(());
    }
    if depth > 16 {
        bail!("module dependencies of {name} nest too deep");
    }
    let member = members
        .iter()
        .find(|m| {
            let base = m.rsplit('/').next().unwrap_or(m);
            base == file || base.strip_prefix(&file).is_some_and(|x| x.starts_with('.'))
        })
        .with_context(|| format!("no module {name} in {}", deb.display()))?;
    untar(deb, tmp, &[member.as_str()])?;
    let src = tmp.join(member);
    let bytes = match member.rsplit_once(".ko.") {
        Some((_, "xz")) => decompress("xz", &src)?,
        Some((_, "zst")) => decompress("zstd", &src)?,
        _ => fs::read(&src).with_context(|| format!("reading {}", src.display()))?,
    };
    for dep in modinfo_depends(&bytes) {
        add_module(deb, members, tmp, &dep, names, depth + 1)?;
    }
    fs::write(tmp.join(&file), bytes).with_context(|| format!("writing {file}"))?;
    names.push(file);
    Ok(())
}

/// `tool -dc src`'s output.
fn decompress(tool: &str, src: &Path) -> Result<Vec<u8>> {
    let out = Command::new(tool)
        .arg("-dc")
        .arg(src)
        .output()
        .with_context(|| format!("starting {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed ({})", src.display(), out.status);
    }
    Ok(out.stdout)
}

/// The modules a module's `.modinfo` names in `depends=` (comma-separated; empty for none).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &ko[at + KEY.len()..];
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Extracts the members `members` of `deb` into `dir`.
fn untar(deb: &Path, dir: &Path, members: &[&str]) -> Result<()> {
    let mut args = vec!["-x".as_ref(), "-C".as_ref(), dir.as_os_str()];
    args.extend(members.iter().map(|m| std::ffi::OsStr::new(*m)));
    data_tar(deb, &args).map(drop)
}

/// The member names of `deb`'s data archive.
fn list(deb: &Path) -> Result<Vec<String>> {
    let out = data_tar(deb, &["-t".as_ref()])?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect())
}

/// `dpkg-deb --fsys-tarfile deb | tar args`: tar's standard output.
fn data_tar(deb: &Path, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting dpkg-deb")?;
    let tar_in = dpkg.stdout.take().context("dpkg-deb has no stdout pipe")?;
    let out = Command::new("tar")
        .args(args)
        .stdin(tar_in)
        .stderr(Stdio::inherit())
        .output()
        .context("starting tar")?;
    let dpkg = dpkg.wait().context("waiting for dpkg-deb")?;
    if !dpkg.success() || !out.status.success() {
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        bail!(
            "tar {} on {} failed (dpkg-deb {dpkg}, tar {})",
            args.join(" "),
            deb.display(),
            out.status
        );
    }
    Ok(out.stdout)
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
    fn modinfo_depends_reads_the_depends_key() {
        let ko = b"\x7fELF...\0license=GPL\0depends=zsmalloc\0retpoline=Y\0name=zram\0";
        assert_eq!(modinfo_depends(ko), ["zsmalloc"]);
        let ko = b"..\0depends=a, b\0name=x\0";
        assert_eq!(modinfo_depends(ko), ["a", "b"]);
        assert!(modinfo_depends(b"..\0depends=\0name=zram\0").is_empty());
        assert!(modinfo_depends(b"no modinfo").is_empty());
    }

    #[test]
    fn numeric_key_orders_abi_numbers() {
        assert!(
            numeric_key("linux-image-6.1.0-56-amd64-unsigned")
                > numeric_key("linux-image-6.1.0-9-amd64-unsigned")
        );
    }

    #[test]
    fn pick_image_takes_the_newest_plain_image() {
        let names = "linux-image-6.18.9+deb13-amd64\nlinux-image-6.18.15+deb13-cloud-amd64\n\
                     linux-image-6.18.15+deb13-rt-amd64\nlinux-image-6.18.12+deb13-amd64\n\
                     linux-image-6.18.15+deb13-amd64-dbg\nlinux-image-6.18.5+deb13-amd64\n";
        assert_eq!(
            pick_image(names, "6.18").as_deref(),
            Some("linux-image-6.18.12+deb13-amd64")
        );
        assert_eq!(pick_image(names, "6.19"), None);
    }

    #[test]
    fn payload_rejects_non_bzimage() {
        assert!(payload(&[0u8; 1024]).is_err());
    }
}
