//! Walking Xtc containers: children packed back to back, Parents recursed into.

use super::error::{FormatError, FormatResult};
use super::header::{TypeKind, XTC_HEADER_SIZE, XtcHeader};

/// Deepest Parent nesting accepted (real files nest at most two levels).
pub const MAX_DEPTH: usize = 16;

/// One Xtc inside a buffer: its header, absolute offset and payload (bytes after the header).
#[derive(Debug, Clone, Copy)]
pub struct XtcNode<'a> {
    pub header: XtcHeader,
    /// Absolute offset of the Xtc header in its file.
    pub offset: u64,
    pub payload: &'a [u8],
}

impl<'a> XtcNode<'a> {
    /// Absolute offset of the first payload byte.
    pub fn payload_offset(&self) -> u64 {
        self.offset + XTC_HEADER_SIZE as u64
    }

    /// The direct children of this container.
    pub fn children(&self) -> Children<'a> {
        Children::new(self.payload, self.payload_offset())
    }
}

/// Iterator over the direct children packed in a container payload.
pub struct Children<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
    failed: bool,
}

impl<'a> Children<'a> {
    /// Children of the payload `buf`, whose first byte is at absolute offset `base`.
    pub fn new(buf: &'a [u8], base: u64) -> Self {
        Self {
            buf,
            pos: 0,
            base,
            failed: false,
        }
    }
}

impl<'a> Iterator for Children<'a> {
    type Item = FormatResult<XtcNode<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let at = self.base + self.pos as u64;
        let header = match XtcHeader::parse(self.buf, self.pos, self.base) {
            Ok(h) => h,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let end = self.pos + header.extent as usize;
        if end > self.buf.len() {
            self.failed = true;
            return Some(Err(FormatError::new(
                at,
                format!(
                    "Xtc extent {} runs {} bytes past the end of its parent",
                    header.extent,
                    end - self.buf.len()
                ),
            )));
        }
        let node = XtcNode {
            header,
            offset: at,
            payload: &self.buf[self.pos + XTC_HEADER_SIZE..end],
        };
        self.pos = end;
        Some(Ok(node))
    }
}

/// Calls `f` on every non-Parent Xtc under `root`, in file order, recursing through Parents.
///
/// Like the DAQ's XtcIterator, the contents of an Xtc marked Corrupted are not visited.
pub fn for_each_leaf<'a>(
    root: &XtcNode<'a>,
    f: &mut dyn FnMut(XtcNode<'a>) -> FormatResult<()>,
) -> FormatResult<()> {
    walk(root, 0, f)
}

fn walk<'a>(
    node: &XtcNode<'a>,
    depth: usize,
    f: &mut dyn FnMut(XtcNode<'a>) -> FormatResult<()>,
) -> FormatResult<()> {
    if depth > MAX_DEPTH {
        return Err(FormatError::new(
            node.offset,
            format!("Parent Xtcs nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    if node.header.damage.corrupted() {
        return Ok(());
    }
    for child in node.children() {
        let child = child?;
        match child.header.contains.kind() {
            TypeKind::Parent => walk(&child, depth + 1, f)?,
            _ => f(child)?,
        }
    }
    Ok(())
}
