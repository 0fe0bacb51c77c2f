//! `kubetrail migrate FILE`: a Fluent Bit configuration (classic or YAML) printed as kubetrail
//! YAML, with a comment wherever kubetrail means something else than Fluent Bit; and how the
//! Fluent Bit reader's diagnostics are shown by `check` and logged by `run`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use kubetrail::topology::Plan;
use kubetrail_fluentbit::{Diagnostic, Disk, LoadError, Severity};

use super::EXIT_CONFIG;

/// Prints diagnostics to stderr, errors first, each as `error:`/`warning:`/`note:` + message.
pub fn print_diagnostics(all: &[Diagnostic]) {
    let mut sorted: Vec<&Diagnostic> = all.iter().collect();
    sorted.sort_by_key(|d| d.severity);
    for d in sorted {
        eprintln!("{}: {d}", d.severity.word());
    }
}

/// What `check` shows of a Fluent Bit file that can run: its warnings, and how many notes
/// `migrate` would write as comments.
pub fn print_check_diagnostics(all: &[Diagnostic], path: &Path) {
    let warnings: Vec<Diagnostic> = all
        .iter()
        .filter(|d| d.severity != Severity::Note)
        .cloned()
        .collect();
    print_diagnostics(&warnings);
    let notes = all.len() - warnings.len();
    if notes > 0 {
        eprintln!(
            "note: {notes} places where kubetrail's meaning differs from Fluent Bit's: \
             `kubetrail migrate {}` shows them as comments",
            path.display()
        );
    }
}

/// Logs what the Fluent Bit reader found (warnings as warnings, notes at debug level).
pub fn log_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        match d.severity {
            Severity::Warning => tracing::warn!(diagnostic = %d, "configuration"),
            _ => tracing::debug!(diagnostic = %d, "configuration"),
        }
    }
}

/// Translates `path` and prints the kubetrail YAML; exit status 2 when the file cannot be
/// translated or the result would not run.
pub fn run(path: &Path) -> ExitCode {
    let (_, migration) = match kubetrail_fluentbit::migration(&Disk, path, &BTreeMap::new()) {
        Ok(m) => m,
        Err(LoadError::FluentBit(all)) => {
            print_diagnostics(&all);
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if migration.has_errors() {
        print_diagnostics(&kubetrail_fluentbit::refusal(migration.diagnostics));
        return ExitCode::from(EXIT_CONFIG);
    }
    // The same checks `check` makes on the components (values, unknown keys), so that what
    // is printed runs.
    let built = migration
        .to_config(&BTreeMap::new())
        .map_err(|e| e.to_string())
        .and_then(|c| Plan::from_config(c).map_err(|e| e.to_string()));
    if let Err(e) = built {
        eprintln!("error: {e}");
        print_diagnostics(&kubetrail_fluentbit::refusal(migration.diagnostics));
        return ExitCode::from(EXIT_CONFIG);
    }
    let warnings: Vec<Diagnostic> = migration
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .cloned()
        .collect();
    print_diagnostics(&warnings);
    print!("{}", migration.to_yaml());
    ExitCode::SUCCESS
}
