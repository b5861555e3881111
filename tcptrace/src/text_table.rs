//! Plain aligned tables for human output (`snapshot`, `tune`), drawn by
//! comfy-table without borders: columns padded to their widest cell, two
//! spaces apart, indented by two, numbers right-aligned.

use std::io::{self, Write};

use comfy_table::{CellAlignment, ContentArrangement, Table, presets::NOTHING};

/// Writes `rows` under `headers`; `right[i]` right-aligns column `i`
/// (numbers). An empty table prints `(none)` so a section never looks
/// cut off. Lines carry no trailing spaces.
pub fn write_table(
    out: &mut impl Write,
    headers: &[&str],
    right: &[bool],
    rows: &[Vec<String>],
) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "  (none)");
    }
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.to_vec())
        .add_rows(rows.iter().cloned());
    for (column, right) in table.column_iter_mut().zip(right) {
        if *right {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    // NOTHING pads each cell with one space either side: one more space
    // makes the two-space indent.
    for line in table.lines() {
        writeln!(out, " {}", line.trim_end())?;
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

    #[test]
    fn an_empty_header_keeps_the_columns() {
        let mut out = Vec::new();
        let rows = vec![vec!["ESTABLISHED".to_string(), "3".into(), "+1".into()]];
        write_table(
            &mut out,
            &["STATE", "COUNT", ""],
            &[false, true, true],
            &rows,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  STATE        COUNT\n  ESTABLISHED      3  +1\n"
        );
    }
}
