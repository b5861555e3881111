//! Plain aligned text tables for human output (snapshot, tune).

use std::io::{self, Write};

/// Writes columns padded to their widest cell, two spaces apart and
/// indented by two; `right[i]` right-aligns column i (numbers). An empty
/// table prints `(none)` so a section never looks cut off.
pub fn write_table(
    out: &mut impl Write,
    headers: &[&str],
    right: &[bool],
    rows: &[Vec<String>],
) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "  (none)");
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(right.iter().chain(std::iter::repeat(&false)))
            .map(|((cell, width), right)| {
                if *right {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        format!("  {}", padded.join("  ").trim_end())
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_empty_says_none() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["a".to_string(), "1".into()],
            vec!["long".into(), "100".into()],
        ];
        write_table(&mut out, &["NAME", "N"], &[false, true], &rows).unwrap();
        write_table(&mut out, &["NAME"], &[false], &[]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  NAME    N\n  a       1\n  long  100\n  (none)\n"
        );
    }
}
