//! Which nodes an order is for: `--nodes all` (this node and every verified peer),
//! `--nodes LIST` (names or peer ids, comma-separated) or `--group NAME`. Pure: the
//! issuer hands in the nodes it can order and gets back the targets and the listed
//! names that match none of them.

use std::fmt;

use shoal_protocol::wire::is_node_name;

/// The nodes an order is for, as the operator wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// This node and every verified peer.
    All,
    /// The nodes with these names or peer ids (each entry must match one or more).
    Nodes(Vec<String>),
    /// The nodes in this group.
    Group(String),
}

impl Selection {
    /// From `--nodes` (`all` or a comma-separated list) and `--group`, at most one of
    /// them given; neither means all.
    pub fn parse(nodes: Option<&str>, group: Option<&str>) -> Result<Selection, String> {
        match (nodes.map(str::trim), group.map(str::trim)) {
            (Some(_), Some(_)) => Err("give --nodes or --group, not both".into()),
            (None, None) | (Some("all"), None) => Ok(Selection::All),
            (None, Some(group)) => {
                if is_node_name(group) {
                    Ok(Selection::Group(group.to_owned()))
                } else {
                    Err(format!("{group:?} is not a group name"))
                }
            }
            (Some(list), None) => {
                let mut names: Vec<String> = Vec::new();
                for entry in list.split(',').map(str::trim) {
                    if !is_node_name(entry) {
                        return Err(format!(
                            "{entry:?} in --nodes is not a node name or peer id (names are ASCII letters, digits, '.', '_' and '-')"
                        ));
                    }
                    if !names.iter().any(|n| n == entry) {
                        names.push(entry.to_owned());
                    }
                }
                Ok(Selection::Nodes(names))
            }
        }
    }

    /// Whether the selection goes by names or groups, which peers tell a moment after
    /// they are verified.
    pub fn needs_names(&self) -> bool {
        !matches!(self, Selection::All)
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selection::All => write!(f, "all nodes"),
            Selection::Nodes(names) => write!(f, "nodes {}", names.join(",")),
            Selection::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// A node the issuer can order: itself or a verified peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its peer id (empty for an issuer without a fleet key).
    pub peer_id: String,
    /// Its name (`None` for a peer that has not introduced itself).
    pub name: Option<String>,
    /// Its groups.
    pub groups: Vec<String>,
    /// Whether it is the issuer.
    pub local: bool,
}

impl Member {
    /// Its name, or its peer id if it has none.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.peer_id)
    }

    fn is(&self, entry: &str) -> bool {
        self.name.as_deref() == Some(entry) || (!self.peer_id.is_empty() && self.peer_id == entry)
    }
}

/// What a selection comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// Indices into the members, in the members' order, each once.
    pub targets: Vec<usize>,
    /// Listed entries that matched no member, in the order listed.
    pub unknown: Vec<String>,
}

/// The members `selection` picks. A listed name matches every member that bears it
/// (names are not required to be unique); a peer id matches one.
pub fn choose(members: &[Member], selection: &Selection) -> Chosen {
    let targets: Vec<usize> = match selection {
        Selection::All => (0..members.len()).collect(),
        Selection::Group(g) => (0..members.len())
            .filter(|&i| members[i].groups.iter().any(|x| x == g))
            .collect(),
        Selection::Nodes(names) => (0..members.len())
            .filter(|&i| names.iter().any(|n| members[i].is(n)))
            .collect(),
    };
    let unknown = match selection {
        Selection::Nodes(names) => names
            .iter()
            .filter(|n| !members.iter().any(|m| m.is(n)))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    Chosen { targets, unknown }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, name: Option<&str>, groups: &[&str], local: bool) -> Member {
        Member {
            peer_id: id.into(),
            name: name.map(Into::into),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            local,
        }
    }

    fn fleet() -> Vec<Member> {
        vec![
            member("12D3KooWlocal", Some("n0"), &["web"], true),
            member("12D3KooWa", Some("n1"), &["web", "eu"], false),
            member("12D3KooWb", Some("n2"), &["db"], false),
            member("12D3KooWc", None, &[], false),
        ]
    }

    #[test]
    fn flags_parse_into_a_selection() {
        assert_eq!(Selection::parse(None, None), Ok(Selection::All));
        assert_eq!(Selection::parse(Some(" all "), None), Ok(Selection::All));
        assert_eq!(
            Selection::parse(Some("n1, n2,n1"), None),
            Ok(Selection::Nodes(vec!["n1".into(), "n2".into()]))
        );
        assert_eq!(
            Selection::parse(None, Some("web")),
            Ok(Selection::Group("web".into()))
        );
        assert!(Selection::parse(Some("n1"), Some("web")).is_err());
        assert!(Selection::parse(Some("n1,,n2"), None).is_err());
        assert!(Selection::parse(Some("n 1"), None).is_err());
        assert!(Selection::parse(None, Some("-web")).is_err());
        assert!(!Selection::All.needs_names());
        assert!(Selection::Group("web".into()).needs_names());
    }

    #[test]
    fn all_is_every_member_including_this_node() {
        let c = choose(&fleet(), &Selection::All);
        assert_eq!(c.targets, [0, 1, 2, 3]);
        assert!(c.unknown.is_empty());
    }

    #[test]
    fn a_list_takes_names_and_peer_ids_and_reports_what_matches_nothing() {
        let list = Selection::Nodes(vec![
            "n2".into(),
            "12D3KooWc".into(),
            "n9".into(),
            "n0".into(),
        ]);
        let c = choose(&fleet(), &list);
        assert_eq!(c.targets, [0, 2, 3]);
        assert_eq!(c.unknown, ["n9"]);
    }

    #[test]
    fn a_shared_name_selects_every_node_that_bears_it() {
        let mut f = fleet();
        f[2].name = Some("n1".into());
        let c = choose(&f, &Selection::Nodes(vec!["n1".into()]));
        assert_eq!(c.targets, [1, 2]);
    }

    #[test]
    fn a_group_takes_its_members_only() {
        let c = choose(&fleet(), &Selection::Group("web".into()));
        assert_eq!(c.targets, [0, 1]);
        let none = choose(&fleet(), &Selection::Group("cache".into()));
        assert!(none.targets.is_empty() && none.unknown.is_empty());
    }

    #[test]
    fn an_issuer_without_a_fleet_is_not_matched_by_an_empty_id() {
        let alone = [member("", Some("n0"), &[], true)];
        let c = choose(&alone, &Selection::Nodes(vec!["n0".into(), "x".into()]));
        assert_eq!(c.targets, [0]);
        assert_eq!(c.unknown, ["x"]);
        assert_eq!(alone[0].label(), "n0");
        assert_eq!(fleet()[3].label(), "12D3KooWc");
    }
}
