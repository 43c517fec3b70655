//! `cairn completions SHELL` and `cairn man [--dir DIR]`: text generated from the clap command
//! line, so they never drift from the flags. The .deb's man pages and completions are written
//! by the release binary with these commands (packaging/build-deb.sh).

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::args::{Cli, UsageError};
use super::output::{print_bytes, say};

/// Prints the completion script for `shell`, for the name this binary was called by.
pub(crate) fn completions(shell: clap_complete::Shell) -> i32 {
    let name = super::help::program_name();
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    print_bytes(&script)
}

/// Prints the man page (roff).
pub(crate) fn man() -> anyhow::Result<i32> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    Ok(print_bytes(&page))
}

/// `cairn man --dir DIR`: one page per command, `cairn.1`, `cairn-deployment.1`,
/// `cairn-deployment-backup.1`, ... (each named by the command's full path, as git's are).
pub(crate) fn man_pages(dir: &Path) -> anyhow::Result<i32> {
    let written = write_man_pages(dir).map_err(|error| {
        UsageError(format!(
            "cairn man --dir {}: cannot write the man pages there: {error}; give a directory this user can write to.",
            dir.display()
        ))
    })?;
    say(&format!(
        "wrote {} man pages into {}",
        written.len(),
        dir.display()
    ));
    Ok(0)
}

/// Writes every command's page into `dir` (created if missing); returns their paths.
fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // Built once, so that every subcommand knows its full name (`cairn-deployment-backup`).
    let mut command = super::help::command().disable_help_subcommand(true);
    command.build();
    let mut written = Vec::new();
    write_pages_of(command, dir, &mut written)?;
    Ok(written)
}

/// `command`'s page and those of its visible subcommands, depth first.
fn write_pages_of(
    command: clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages_of(sub.clone(), dir, written)?;
    }
    written.push(clap_mangen::Man::new(command).generate_to(dir)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of every visible command below `command`, joined with `-` (`deployment-backup`).
    fn command_paths(command: &clap::Command, prefix: &str, paths: &mut Vec<String>) {
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            let path = format!("{prefix}-{}", sub.get_name());
            command_paths(sub, &path, paths);
            paths.push(path);
        }
    }

    #[test]
    fn every_command_gets_its_own_page() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(&dir.path().join("man1")).unwrap();
        let mut expected = vec!["cairn".to_string()];
        command_paths(&Cli::command(), "cairn", &mut expected);
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("man1"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected: Vec<String> = expected.iter().map(|name| format!("{name}.1")).collect();
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(written.len(), expected.len());
        for name in [
            "cairn.1",
            "cairn-deployment-backup.1",
            "cairn-director-restore.1",
            "cairn-backups-list.1",
            "cairn-contract-check.1",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        for path in &written {
            let page = std::fs::read_to_string(path).unwrap();
            let title = page
                .lines()
                .find(|line| line.starts_with(".TH "))
                .unwrap_or_else(|| panic!("{path:?} has no .TH line"));
            let stem = path.file_stem().unwrap().to_string_lossy();
            // `.TH cairn-deployment-backup 1  "cairn-deployment-backup 0.1.0"`.
            assert!(title.starts_with(&format!(".TH {stem} 1 ")), "{title}");
            assert!(page.contains(".SH NAME"), "{path:?}");
        }
        if std::process::Command::new("man")
            .arg("--version")
            .output()
            .is_ok()
        {
            for path in &written {
                rendered_by_man(path);
            }
        }
        let backup =
            std::fs::read_to_string(dir.path().join("man1/cairn-deployment-backup.1")).unwrap();
        assert!(backup.contains("artifact\\-path"), "{backup}");
    }

    /// `man -l PAGE` renders the page with no warning from groff.
    fn rendered_by_man(page: &Path) {
        let output = std::process::Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "man -l {page:?}: {stderr}"
        );
        let name = page.file_stem().unwrap().to_string_lossy();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(name.as_ref()), "{page:?}: {text}");
    }

    #[test]
    fn an_unwritable_directory_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let error = man_pages(&file).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("cairn man --dir {}: cannot write", file.display())),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
    }
}
