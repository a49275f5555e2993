//! coreutils (ls, sort, wc, sha256sum, date, seq, cp, mv, rm, stat) and awk on fixed
//! inputs, under each persona and natively.

use std::fs;

use crate::common::{compare, native, under, Outcome};
use crate::{compare_all, fix_mtimes, requires, TempDir};

#[test]
fn coreutils_ls_la_of_a_fixed_directory() {
    let dir = TempDir::new("ls");
    let outer = dir.path().join("outer");
    let d = outer.join("inner");
    fs::create_dir_all(d.join("sub")).expect("mkdir");
    fs::write(d.join("file"), b"some content\n").expect("write");
    fs::write(d.join(".hidden"), b"").expect("write");
    fs::write(d.join("big"), vec![b'x'; 100_000]).expect("write");
    std::os::unix::fs::symlink("file", d.join("link")).expect("symlink");
    fix_mtimes(&[
        &d.join("sub"),
        &d.join("file"),
        &d.join(".hidden"),
        &d.join("big"),
        &d.join("link"),
        &d,
        &outer,
    ]);
    let ds = d.to_str().expect("utf-8");
    compare_all(&["ls", "-la", "--color=never", ds]);
    compare_all(&["ls", "-laiR", "--full-time", ds]);
    let (n, _) = compare("2.6", &["ls", "-la", ds]);
    assert!(n.out().contains("link -> file"), "{}", n.out());
}

#[test]
fn coreutils_sort_wc_sha256sum() {
    let dir = TempDir::new("sort");
    // 20000 pseudo-random lines from a fixed linear congruential generator.
    let mut x: u64 = 12345;
    let mut text = String::new();
    for i in 0..20000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(&format!("{} word{} {}\n", x >> 40, (x >> 20) % 977, i));
    }
    let data = dir.path().join("data");
    fs::write(&data, text).expect("write data");
    let f = data.to_str().expect("utf-8");
    compare_all(&["sort", f]);
    compare_all(&["sort", "-n", "-r", "-k1,1", "-k3,3n", f]);
    compare_all(&["sh", "-c", "sort -k2,2 -u \"$1\" | wc -l", "sh", f]);
    compare_all(&["wc", f]);
    compare_all(&["sha256sum", f]);
    compare_all(&["sh", "-c", "sort \"$1\" | sha256sum", "sh", f]);
    let (n, _) = compare("2.6", &["wc", "-l", f]);
    assert_eq!(n.out(), format!("20000 {f}\n"));
}

#[test]
fn coreutils_date_seq_awk() {
    let (n, _) = compare("2.6", &["date", "-d", "@0", "-u"]);
    assert_eq!(n.out(), "Thu Jan  1 00:00:00 UTC 1970\n");
    compare("host", &["date", "-d", "@0", "-u"]);
    compare_all(&["date", "-u", "-d", "2009-12-03 12:00:00", "+%s %A %j"]);
    if !requires("coreutils_date_seq_awk", &["awk"]) {
        return;
    }
    let (n, _) = compare(
        "2.6",
        &[
            "sh",
            "-c",
            "seq 1 100000 | awk '{ s += $1 } END { printf \"%.0f %d\\n\", s, NR }'",
        ],
    );
    assert_eq!(n.out(), "5000050000 100000\n");
    compare(
        "host",
        &[
            "sh",
            "-c",
            "seq 1 100000 | awk '{ s += $1 } END { printf \"%.0f %d\\n\", s, NR }'",
        ],
    );
    compare_all(&[
        "sh",
        "-c",
        "seq -w 1 3 30 | awk '{ printf \"%s:%d\\n\", $1, $1 * $1 }'",
    ]);
}

#[test]
fn coreutils_cp_mv_rm_in_a_temp_dir() {
    let base = TempDir::new("cpmv");
    let script = r#"
set -e
d=$(mktemp -d -p "$1")
cd "$d"
seq 1 5000 > a
mkdir -p tree/x/y
printf 'deep\n' > tree/x/y/z
cp a b
cp -r tree tree2
cp -p a c
mv b moved
mv tree2 tree3
ln -s moved sym
rm a
rm -r tree
ls -R
cmp moved c && echo "copies equal"
cat tree3/x/y/z sym | tail -n 2
wc -c moved c
cd /
rm -rf "$d"
[ ! -e "$d" ] && echo "removed"
"#;
    compare_all(&["sh", "-c", script, "sh", base.str()]);
    let (n, _) = compare("2.6", &["sh", "-c", script, "sh", base.str()]);
    assert!(
        n.out()
            .ends_with("copies equal\n4999\n5000\n23893 moved\n23893 c\n47786 total\nremoved\n"),
        "{}",
        n.out()
    );
    // Nothing is left in the base directory by either run.
    assert_eq!(fs::read_dir(base.path()).expect("read base").count(), 0);
}

#[test]
fn coreutils_stat_of_a_file() {
    let dir = TempDir::new("stat");
    let f = dir.path().join("file");
    fs::write(&f, b"0123456789").expect("write");
    fix_mtimes(&[&f]);
    let fs_ = f.to_str().expect("utf-8");
    let fmt = "%n %s %b %a %A %F %h %i %u %g %Y %y";
    compare_all(&["stat", "-c", fmt, fs_]);
    let (n, _) = compare("2.6", &["stat", "-c", "%s %F %Y", fs_]);
    assert_eq!(n.out(), "10 regular file 1577934245\n");
    // The full report: the host persona shows what native does. Linux 2.6.32 had no
    // statx, so under 2.6 coreutils falls back to fstatat and cannot know the birth
    // time: "Birth: -". Every other line is the same.
    compare("host", &["stat", fs_]);
    let n = native(&["stat", fs_]);
    let g = under("2.6", &["stat", fs_]);
    assert_eq!(g.status, 0, "{}", g.err());
    let split = |o: &Outcome| -> (Vec<String>, Vec<String>) {
        o.out()
            .lines()
            .map(str::to_string)
            .partition(|l| !l.trim_start().starts_with("Birth:"))
    };
    let (n_rest, _) = split(&n);
    let (g_rest, g_birth) = split(&g);
    assert_eq!(g_rest, n_rest);
    assert_eq!(g_birth, vec![" Birth: -".to_string()], "{}", g.out());
}
