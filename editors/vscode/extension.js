// Starts `netdsl lsp` (the language server, `pip install 'netdsl[lsp]'`) for .seg files and passes it the
// `netdsl.*` settings. Highlighting needs no server: it is the TextMate grammar in syntaxes/.
"use strict";
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("netdsl");
  const command = config.get("path") || "netdsl";
  const serverOptions = { command, args: ["lsp"], transport: TransportKind.stdio };
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "seg" }],
    initializationOptions: { netdsl: { target: config.get("target") || "vanilla" } },
    synchronize: { configurationSection: "netdsl", fileEvents: vscode.workspace.createFileSystemWatcher("**/*.seg") },
  };
  client = new LanguageClient("netdsl", "netdsl language server", serverOptions, clientOptions);
  client.start();
  context.subscriptions.push({ dispose: () => client && client.stop() });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
