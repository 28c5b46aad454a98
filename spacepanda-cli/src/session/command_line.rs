//! One line of a chat session, parsed: a command, or text for the current group. Pure, so
//! every case is a unit test.

/// What a line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// `/create NAME`
    Create(String),
    /// `/invite GROUP ADDRESS…`
    Invite { group: String, users: Vec<String> },
    /// `/remove GROUP USER`
    Remove { group: String, user: String },
    /// `/groups`
    Groups,
    /// `/members [GROUP]` (the current group without one)
    Members(Option<String>),
    /// `/safety USER`
    Safety(String),
    /// `/open GROUP`: makes it the current group.
    Open(String),
    /// `/join-mine`: join the groups the user's other devices are in.
    JoinMine,
    /// `/rejoin GROUP`: join a group again by external commit.
    Rejoin(String),
    /// `/whoami`
    Whoami,
    /// `/status`: the network, and what waits to be delivered.
    Status,
    /// `/help`
    Help,
    /// `/quit`
    Quit,
    /// A plain line (a leading `//` sends a line that starts with `/`).
    Send(String),
    /// Nothing (an empty line).
    Nothing,
}

/// The session's commands, for `/help` and for errors.
pub(crate) const HELP: &str = "\
/create NAME              create a group (it becomes the current one)
/invite GROUP ADDRESS…    invite users by address (bob@1a2b3c4d) or unique name
/remove GROUP USER        remove a user (address or name) from a group
/groups                   your groups
/members [GROUP]          a group's members, with safety numbers
/safety USER              the safety number to compare with a user
/open GROUP               make GROUP the current group
/join-mine                join the groups your other devices are in (a new device)
/rejoin GROUP             join GROUP again, if this device fell out of step with it
/whoami                   your address
/status                   peers, and messages not yet delivered
/quit                     leave (also: end of input)
anything else             is sent to the current group (//text sends /text)";

/// Parses one line. The error is a usage line for the user.
pub(crate) fn parse(line: &str) -> Result<Input, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Input::Nothing);
    }
    if let Some(literal) = line.strip_prefix("//") {
        return Ok(Input::Send(format!("/{literal}")));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Input::Send(line.to_owned()));
    };
    let mut words = command.split_whitespace();
    let name = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let input = match (name, args.as_slice()) {
        ("create", [group]) => Input::Create((*group).to_owned()),
        ("invite", [group, users @ ..]) if !users.is_empty() => Input::Invite {
            group: (*group).to_owned(),
            users: users.iter().map(|user| (*user).to_owned()).collect(),
        },
        ("remove", [group, user]) => Input::Remove {
            group: (*group).to_owned(),
            user: (*user).to_owned(),
        },
        ("groups", []) => Input::Groups,
        ("members", []) => Input::Members(None),
        ("members", [group]) => Input::Members(Some((*group).to_owned())),
        ("safety", [user]) => Input::Safety((*user).to_owned()),
        ("open", [group]) => Input::Open((*group).to_owned()),
        ("join-mine", []) => Input::JoinMine,
        ("rejoin", [group]) => Input::Rejoin((*group).to_owned()),
        ("whoami", []) => Input::Whoami,
        ("status", []) => Input::Status,
        ("help", _) => Input::Help,
        ("quit" | "exit", []) => Input::Quit,
        (
            "create" | "invite" | "remove" | "groups" | "members" | "safety" | "open" | "join-mine"
            | "rejoin" | "whoami" | "status" | "quit" | "exit",
            _,
        ) => return Err(format!("usage: {}", usage_of(name))),
        _ => return Err(format!("unknown command /{name}; /help lists them")),
    };
    Ok(input)
}

fn usage_of(command: &str) -> &'static str {
    HELP.lines()
        .find(|line| {
            line.strip_prefix('/')
                .and_then(|rest| rest.split_whitespace().next())
                == Some(command)
        })
        .unwrap_or("/help")
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]

    use super::*;

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(parse("/create team"), Ok(Input::Create("team".into())));
        assert_eq!(
            parse("/invite team bob@1a2b3c4d carol"),
            Ok(Input::Invite {
                group: "team".into(),
                users: vec!["bob@1a2b3c4d".into(), "carol".into()]
            })
        );
        assert_eq!(
            parse("/remove team bob"),
            Ok(Input::Remove {
                group: "team".into(),
                user: "bob".into()
            })
        );
        assert_eq!(parse("/groups"), Ok(Input::Groups));
        assert_eq!(parse("/members"), Ok(Input::Members(None)));
        assert_eq!(
            parse("/members team"),
            Ok(Input::Members(Some("team".into())))
        );
        assert_eq!(
            parse("/safety bob@1a2b3c4d"),
            Ok(Input::Safety("bob@1a2b3c4d".into()))
        );
        assert_eq!(parse("/open team"), Ok(Input::Open("team".into())));
        assert_eq!(parse("/whoami"), Ok(Input::Whoami));
        assert_eq!(parse("/join-mine"), Ok(Input::JoinMine));
        assert_eq!(parse("/rejoin team"), Ok(Input::Rejoin("team".into())));
        assert_eq!(parse("/status"), Ok(Input::Status));
        assert_eq!(parse("/help me"), Ok(Input::Help));
        assert_eq!(parse("/quit\r\n"), Ok(Input::Quit));
    }

    #[test]
    fn plain_lines_are_sent_as_typed() {
        assert_eq!(
            parse("hello  there "),
            Ok(Input::Send("hello  there ".into()))
        );
        assert_eq!(
            parse("//create is a command"),
            Ok(Input::Send("/create is a command".into()))
        );
        assert_eq!(parse("   "), Ok(Input::Nothing));
        assert_eq!(parse(""), Ok(Input::Nothing));
    }

    #[test]
    fn wrong_arguments_give_the_commands_usage() {
        assert_eq!(
            parse("/invite team"),
            Err("usage: /invite GROUP ADDRESS…    invite users by address (bob@1a2b3c4d) or unique name".into())
        );
        assert!(
            parse("/create")
                .unwrap_err()
                .starts_with("usage: /create NAME")
        );
        assert!(
            parse("/remove team")
                .unwrap_err()
                .starts_with("usage: /remove GROUP USER")
        );
        assert!(parse("/quit now").unwrap_err().starts_with("usage: /quit"));
        assert!(
            parse("/rejoin")
                .unwrap_err()
                .starts_with("usage: /rejoin GROUP")
        );
        assert_eq!(
            parse("/frobnicate"),
            Err("unknown command /frobnicate; /help lists them".into())
        );
        assert!(parse("/").unwrap_err().starts_with("unknown command"));
    }
}
