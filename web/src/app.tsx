// The shell around every page: navigation, the API key (asked once, kept for the tab's session),
// the colour scheme, and the page for the current path.
import { useEffect, useRef, useState } from 'preact/hooks';
import { KEY_NEEDED_EVENT, apiKey, setApiKey } from './api.js';
import { useCaller } from './caller.js';
import { linkClick, useLocation } from './router.js';
import { THEME_CHANGED_EVENT } from './theme.js';
import { ChatPage } from './pages/chat/chat-page.js';
import { JobsPage } from './pages/jobs/jobs-page.js';
import { PromptsPage } from './pages/prompts/prompts-page.js';
import { DashboardPage } from './pages/dashboard/dashboard-page.js';

const PAGES = [
  { path: '/', label: 'Chat', title: 'Chat' },
  { path: '/jobs', label: 'Jobs', title: 'Jobs' },
  { path: '/prompts', label: 'Prompts', title: 'Prompts' },
  { path: '/dashboard', label: 'Dashboard', title: 'Dashboard' },
] as const;

type Theme = 'auto' | 'light' | 'dark';
const THEME_STORAGE = 'elexirion.theme';

function pageOf(path: string): (typeof PAGES)[number] {
  return PAGES.find((page) => page.path !== '/' && (path === page.path || path.startsWith(`${page.path}/`))) ?? PAGES[0];
}

export function App() {
  const { path } = useLocation();
  const page = pageOf(path);
  const [theme, setTheme] = useState<Theme>(() => (localStorage.getItem(THEME_STORAGE) as Theme | null) ?? 'auto');
  // Bumped when the key changes: the page is rendered anew and calls again with it.
  const [keyVersion, setKeyVersion] = useState(0);
  const [keyPrompt, setKeyPrompt] = useState<string | null>(null);

  // The scheme in effect on <html data-theme>: the picker's, or the system's on "auto" (followed
  // when it changes). One attribute drives the CSS variables, so they read the same from scripts.
  useEffect(() => {
    localStorage.setItem(THEME_STORAGE, theme);
    const system = window.matchMedia('(prefers-color-scheme: dark)');
    const apply = () => {
      document.documentElement.dataset.theme = theme === 'auto' ? (system.matches ? 'dark' : 'light') : theme;
      window.dispatchEvent(new Event(THEME_CHANGED_EVENT));
    };
    apply();
    if (theme !== 'auto') return;
    system.addEventListener('change', apply);
    return () => system.removeEventListener('change', apply);
  }, [theme]);

  useEffect(() => {
    document.title = `${page.title} · Elexirion`;
  }, [page]);

  useEffect(() => {
    const onNeeded = (event: Event) => setKeyPrompt((event as CustomEvent<string>).detail || 'This gateway needs an API key.');
    window.addEventListener(KEY_NEEDED_EVENT, onNeeded);
    return () => window.removeEventListener(KEY_NEEDED_EVENT, onNeeded);
  }, []);

  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Elexirion</span>
        <nav aria-label="Pages">
          <ul>
            {PAGES.map((entry) => (
              <li key={entry.path}>
                <a href={entry.path} aria-current={entry === page ? 'page' : undefined} onClick={(event) => linkClick(event, entry.path)}>
                  {entry.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="top-tools">
          <KeyButton key={keyVersion} onClick={() => setKeyPrompt(apiKey() ? 'Change the API key this tab uses.' : 'Give an API key (only when the gateway has keys on).')} />
          <label class="theme-picker">
            <span class="visually-hidden">Colour scheme</span>
            <select value={theme} onChange={(event) => setTheme((event.target as HTMLSelectElement).value as Theme)}>
              <option value="auto">Auto</option>
              <option value="light">Light</option>
              <option value="dark">Dark</option>
            </select>
          </label>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {page.path === '/' ? <ChatPage key={keyVersion} /> : null}
        {page.path === '/jobs' ? <JobsPage key={keyVersion} path={path} /> : null}
        {page.path === '/prompts' ? <PromptsPage key={keyVersion} /> : null}
        {page.path === '/dashboard' ? <DashboardPage key={keyVersion} /> : null}
      </main>
      {keyPrompt !== null ? (
        <KeyDialog
          reason={keyPrompt}
          onClose={(changed) => {
            setKeyPrompt(null);
            if (changed) setKeyVersion((version) => version + 1);
          }}
        />
      ) : null}
    </>
  );
}

/** The key this tab uses, by name (never the secret); nothing when the gateway has keys off. */
function KeyButton({ onClick }: { onClick(): void }) {
  const { caller } = useCaller();
  if (caller && !caller.keysEnabled) return <span class="badge" title="This gateway runs with GATEWAY_AUTH=off: no key is needed">keys off</span>;
  return (
    <button type="button" class="secondary" onClick={onClick}>
      {caller?.name ? `Key: ${caller.name}` : apiKey() ? 'Key: not accepted' : 'API key'}
    </button>
  );
}

function KeyDialog({ reason, onClose }: { reason: string; onClose(changed: boolean): void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [value, setValue] = useState('');
  useEffect(() => {
    dialog.current?.showModal();
  }, []);
  return (
    <dialog ref={dialog} class="key-dialog" aria-labelledby="key-dialog-title" onCancel={() => onClose(false)}>
      <form
        method="dialog"
        onSubmit={(event) => {
          event.preventDefault();
          setApiKey(value.trim() || null);
          onClose(true);
        }}
      >
        <h2 id="key-dialog-title">API key</h2>
        <p>{reason}</p>
        <p class="hint">Kept for this tab's session only (sessionStorage); never sent anywhere but this gateway.</p>
        <label>
          Key
          <input type="password" autoComplete="off" spellcheck={false} placeholder="elx_..." value={value} onInput={(event) => setValue((event.target as HTMLInputElement).value)} />
        </label>
        <div class="actions">
          <button type="submit">Use this key</button>
          {apiKey() ? (
            <button
              type="button"
              class="secondary"
              onClick={() => {
                setApiKey(null);
                onClose(true);
              }}
            >
              Forget the key
            </button>
          ) : null}
          <button type="button" class="secondary" onClick={() => onClose(false)}>
            Cancel
          </button>
        </div>
      </form>
    </dialog>
  );
}
