//! `rbac.authorization.k8s.io/v1` RoleBindings and ClusterRoleBindings (Roles and ClusterRoles
//! have no printer upstream and use the default convertor).

use serde_json::Value;

use super::duration::age;
use super::format::{items, name, text};
use super::{AGE, Col, NAME, Printer};

pub(super) static ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        Col::string(
            "Role",
            "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
        ),
        AGE,
        Col::string("Users", "Users in the roleBinding").wide(),
        Col::string("Groups", "Groups in the roleBinding").wide(),
        Col::string("ServiceAccounts", "ServiceAccounts in the roleBinding").wide(),
    ],
    cells: |obj, now| {
        let role_ref = &obj["roleRef"];
        let (mut users, mut groups, mut service_accounts) = (Vec::new(), Vec::new(), Vec::new());
        for subject in items(&obj["subjects"]) {
            let subject_name = text(&subject["name"]);
            match text(&subject["kind"]) {
                "ServiceAccount" => service_accounts.push(format!("{}/{subject_name}", text(&subject["namespace"]))),
                "User" => users.push(subject_name.to_string()),
                "Group" => groups.push(subject_name.to_string()),
                _ => {}
            }
        }
        vec![
            name(obj),
            Value::from(format!("{}/{}", text(&role_ref["kind"]), text(&role_ref["name"]))),
            age(obj, now),
            Value::from(users.join(", ")),
            Value::from(groups.join(", ")),
            Value::from(service_accounts.join(", ")),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use serde_json::json;

    #[test]
    fn binding_subjects_by_kind() {
        let rb = json!({
            "metadata": {"name": "admins"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [
                {"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ops"}, {"kind": "User", "name": "bob"},
                {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}, {"kind": "Robot", "name": "r2"},
            ],
        });
        let now: Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        let cells = (ROLE_BINDING.cells)(&rb, now);
        assert_eq!(cells.len(), ROLE_BINDING.columns.len());
        assert_eq!(
            cells,
            vec![
                json!("admins"),
                json!("ClusterRole/admin"),
                json!("<unknown>"),
                json!("alice, bob"),
                json!("ops"),
                json!("build/ci")
            ]
        );
    }
}
