//! A list of rows named by label, one of them selected. The selection is
//! kept by name, so it survives the list being refreshed, sorted or
//! filtered; the last frame's scroll position and height make paging move
//! by what the operator sees.

use crate::api::label::Label;
use crate::ui::keymap::Action;
use crate::ui::widgets::keep_in_view;
use std::cell::Cell;

#[derive(Default)]
pub struct Selection {
    rows: Vec<Label>,
    selected: Option<Label>,
    /// The first row on screen, and how many fit, as of the last frame.
    offset: Cell<usize>,
    page: Cell<usize>,
}

impl Selection {
    /// Takes the rows anew, in display order. The selection stays on its
    /// name while that is listed, else moves to the first row.
    pub fn set_rows(&mut self, rows: Vec<Label>) {
        self.rows = rows;
        if !self
            .selected
            .as_ref()
            .is_some_and(|s| self.rows.contains(s))
        {
            self.selected = self.rows.first().cloned();
        }
    }

    pub fn rows(&self) -> &[Label] {
        &self.rows
    }

    pub fn selected(&self) -> Option<&Label> {
        self.selected.as_ref()
    }

    pub fn is_selected(&self, name: &Label) -> bool {
        self.selected.as_ref() == Some(name)
    }

    /// Moves the selection for up, down, a page up or down, top and bottom;
    /// false for any other action.
    pub fn navigate(&mut self, action: Action) -> bool {
        let page = self.page.get().max(1) as isize;
        match action {
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::PageUp => self.move_by(-page),
            Action::PageDown => self.move_by(page),
            Action::Top => self.select(0),
            Action::Bottom => self.select(usize::MAX),
            _ => return false,
        }
        true
    }

    /// The rows that fit in `visible` lines, scrolled as little as possible
    /// to keep the selection in view; remembered for paging.
    pub fn in_view(&self, visible: usize) -> &[Label] {
        let index = self.index().unwrap_or(0);
        let offset = keep_in_view(self.offset.get(), index, visible, self.rows.len());
        self.offset.set(offset);
        self.page.set(visible);
        &self.rows[offset..(offset + visible).min(self.rows.len())]
    }

    /// The rows the last frame showed.
    pub fn last_shown(&self) -> impl Iterator<Item = &Label> {
        self.rows
            .iter()
            .skip(self.offset.get())
            .take(self.page.get().max(1))
    }

    fn index(&self) -> Option<usize> {
        let selected = self.selected.as_ref()?;
        self.rows.iter().position(|r| r == selected)
    }

    fn select(&mut self, index: usize) {
        self.selected = self
            .rows
            .get(index.min(self.rows.len().saturating_sub(1)))
            .cloned();
    }

    fn move_by(&mut self, delta: isize) {
        let current = self.index().unwrap_or(0);
        self.select(current.saturating_add_signed(delta));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Label> {
        list.iter().map(|n| Label::new(n).unwrap()).collect()
    }

    #[test]
    fn the_selection_follows_its_name_through_refreshes() {
        let mut s = Selection::default();
        s.set_rows(names(&["a", "b", "c"]));
        assert_eq!(s.selected().map(Label::as_str), Some("a"));
        s.navigate(Action::Down);
        s.set_rows(names(&["c", "b", "a"]));
        assert_eq!(s.selected().map(Label::as_str), Some("b"));
        s.set_rows(names(&["c", "a"]));
        assert_eq!(
            s.selected().map(Label::as_str),
            Some("c"),
            "gone: the first"
        );
        s.set_rows(Vec::new());
        assert_eq!(s.selected(), None);
    }

    #[test]
    fn paging_moves_by_what_the_last_frame_showed() {
        let mut s = Selection::default();
        let all: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
        s.set_rows(all.iter().map(|n| Label::new(n).unwrap()).collect());
        assert_eq!(s.in_view(3), &names(&["r0", "r1", "r2"])[..]);
        s.navigate(Action::PageDown);
        assert_eq!(s.selected().map(Label::as_str), Some("r3"));
        assert_eq!(s.in_view(3), &names(&["r1", "r2", "r3"])[..]);
        s.navigate(Action::Bottom);
        assert_eq!(s.in_view(3), &names(&["r7", "r8", "r9"])[..]);
        assert_eq!(s.last_shown().count(), 3);
        s.navigate(Action::Top);
        s.navigate(Action::Up);
        assert_eq!(s.selected().map(Label::as_str), Some("r0"));
        assert!(!s.navigate(Action::Select));
    }
}
