"""mitmproxy: the addon, flow files, the HTTP gateway and Passport logins."""
