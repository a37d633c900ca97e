//! Configuration problems with the place in the file they come from.

use std::fmt;
use std::ops::Range;

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column, when the problem has a place in the file.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "line {line}, column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Turns byte offsets of the source text into line and column numbers.
pub struct SourceMap {
    line_starts: Vec<usize>,
}

impl SourceMap {
    pub fn new(source: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(source.match_indices('\n').map(|(at, _)| at + 1));
        SourceMap { line_starts }
    }

    pub fn location(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let column = offset - self.line_starts[line - 1] + 1;
        (line, column)
    }

    pub fn problem(&self, span: Range<usize>, message: impl Into<String>) -> Problem {
        Problem { location: Some(self.location(span.start)), message: message.into() }
    }
}

/// A problem without a place in the file (e.g. a missing section).
pub fn unplaced(message: impl Into<String>) -> Problem {
    Problem { location: None, message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let map = SourceMap::new("a = 1\nbb = 2\n\nc = 3");
        assert_eq!(map.location(0), (1, 1));
        assert_eq!(map.location(6), (2, 1));
        assert_eq!(map.location(8), (2, 3));
        assert_eq!(map.location(14), (4, 1));
    }
}
