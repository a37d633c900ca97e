//! The MCP vocabulary mcp-edge tells apart: request methods (for cache keys, policy, metrics
//! labels and retries) and the server notifications it acts on. One name per method, written
//! once here.

use std::str::FromStr;

/// The MCP request (and client notification) methods mcp-edge knows by name. Any other method
/// is forwarded as it is, labelled `other` in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Initialize,
    Ping,
    ResourcesRead,
    ResourcesList,
    ResourcesTemplatesList,
    ResourcesSubscribe,
    ResourcesUnsubscribe,
    ToolsList,
    ToolsCall,
    PromptsList,
    PromptsGet,
    CompletionComplete,
    LoggingSetLevel,
    SubscriptionsListen,
    ServerDiscover,
    NotificationsInitialized,
    NotificationsCancelled,
}

impl Method {
    pub const ALL: [Method; 17] = [
        Method::Initialize,
        Method::Ping,
        Method::ResourcesRead,
        Method::ResourcesList,
        Method::ResourcesTemplatesList,
        Method::ResourcesSubscribe,
        Method::ResourcesUnsubscribe,
        Method::ToolsList,
        Method::ToolsCall,
        Method::PromptsList,
        Method::PromptsGet,
        Method::CompletionComplete,
        Method::LoggingSetLevel,
        Method::SubscriptionsListen,
        Method::ServerDiscover,
        Method::NotificationsInitialized,
        Method::NotificationsCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Initialize => "initialize",
            Method::Ping => "ping",
            Method::ResourcesRead => "resources/read",
            Method::ResourcesList => "resources/list",
            Method::ResourcesTemplatesList => "resources/templates/list",
            Method::ResourcesSubscribe => "resources/subscribe",
            Method::ResourcesUnsubscribe => "resources/unsubscribe",
            Method::ToolsList => "tools/list",
            Method::ToolsCall => "tools/call",
            Method::PromptsList => "prompts/list",
            Method::PromptsGet => "prompts/get",
            Method::CompletionComplete => "completion/complete",
            Method::LoggingSetLevel => "logging/setLevel",
            Method::SubscriptionsListen => "subscriptions/listen",
            Method::ServerDiscover => "server/discover",
            Method::NotificationsInitialized => "notifications/initialized",
            Method::NotificationsCancelled => "notifications/cancelled",
        }
    }

    /// The method named `name`, if mcp-edge knows it.
    pub fn named(name: &str) -> Option<Method> {
        name.parse().ok()
    }

    /// The bounded metrics label of a JSON-RPC method name (`-`: none, `other`: unknown).
    pub fn label(name: Option<&str>) -> &'static str {
        match name {
            None => "-",
            Some(name) => Method::named(name).map_or("other", Method::as_str),
        }
    }

    /// Reads whose results are cacheable without opting in (`tools/call` needs the route's
    /// `cache_tools` or `readonly_tools`).
    pub fn is_cacheable_read(self) -> bool {
        self.is_list() || matches!(self, Method::ResourcesRead | Method::ServerDiscover)
    }

    /// Lists: paged by `cursor`, invalidated by their kind's `list_changed`.
    pub fn is_list(self) -> bool {
        matches!(self, Method::ResourcesList | Method::ResourcesTemplatesList | Method::ToolsList | Method::PromptsList)
    }

    /// Changes nothing on the server: may be sent again after a failure on a reused connection.
    pub fn changes_nothing(self) -> bool {
        self.is_cacheable_read() || self == Method::Ping
    }

    /// Opens a server-to-client stream that may stay silent for long (no read timeout).
    pub fn is_long_lived(self) -> bool {
        self == Method::SubscriptionsListen
    }

    /// The param a stateless-era request's `Mcp-Name` header mirrors.
    pub fn named_param(self) -> Option<&'static str> {
        match self {
            Method::ToolsCall | Method::PromptsGet => Some("name"),
            Method::ResourcesRead => Some("uri"),
            _ => None,
        }
    }
}

/// A method name mcp-edge does not know.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownMethod;

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(name: &str) -> Result<Method, UnknownMethod> {
        Method::ALL.into_iter().find(|method| method.as_str() == name).ok_or(UnknownMethod)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server notifications that change what a cached answer may say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    ResourceUpdated,
    ResourcesListChanged,
    ToolsListChanged,
    PromptsListChanged,
}

impl Notification {
    pub fn named(name: &str) -> Option<Notification> {
        match name {
            "notifications/resources/updated" => Some(Notification::ResourceUpdated),
            "notifications/resources/list_changed" => Some(Notification::ResourcesListChanged),
            "notifications/tools/list_changed" => Some(Notification::ToolsListChanged),
            "notifications/prompts/list_changed" => Some(Notification::PromptsListChanged),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_its_method() {
        for method in Method::ALL {
            assert_eq!(method.as_str().parse(), Ok(method));
            assert_eq!(Method::label(Some(method.as_str())), method.as_str());
        }
        let mut names: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), Method::ALL.len(), "one name per method");
        assert_eq!("resources/Read".parse::<Method>(), Err(UnknownMethod), "names are case-sensitive");
        assert_eq!((Method::label(Some("x/y")), Method::label(None)), ("other", "-"));
    }

    #[test]
    fn kinds_of_method() {
        let cacheable: Vec<Method> = Method::ALL.into_iter().filter(|m| m.is_cacheable_read()).collect();
        assert_eq!(
            cacheable,
            [
                Method::ResourcesRead,
                Method::ResourcesList,
                Method::ResourcesTemplatesList,
                Method::ToolsList,
                Method::PromptsList,
                Method::ServerDiscover
            ]
        );
        assert!(Method::Ping.changes_nothing() && !Method::ToolsCall.changes_nothing());
        assert_eq!(Method::ToolsCall.named_param(), Some("name"));
        assert_eq!(Method::ResourcesRead.named_param(), Some("uri"));
        assert_eq!(Method::ToolsList.named_param(), None);
    }
}
