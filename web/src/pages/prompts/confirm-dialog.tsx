// A modal confirmation for a change to a rollout: a real <dialog> (focus kept inside, Escape
// cancels) with what will happen, a reason for the history, and the confirm and cancel buttons.
// Focus goes to the reason field on opening and back to the button that opened it on closing.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';

export interface ConfirmDialogProps {
  title: string;
  /** What the change does, in words. */
  children: ComponentChildren;
  confirmLabel: string;
  danger?: boolean;
  /** Runs the change; the dialog closes when it settles (the page reports the outcome). */
  onConfirm(reason: string): Promise<void>;
  onCancel(): void;
}

export function ConfirmDialog({ title, children, confirmLabel, danger, onConfirm, onCancel }: ConfirmDialogProps) {
  const dialog = useRef<HTMLDialogElement>(null);
  const reasonField = useRef<HTMLTextAreaElement>(null);
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);
  // Where focus was (the button that opened it) gets it back when the dialog goes away; read
  // while rendering, before the page under the dialog changes.
  const [opener] = useState(() => (document.activeElement instanceof HTMLElement ? document.activeElement : null));

  useEffect(() => {
    dialog.current?.showModal();
    reasonField.current?.focus();
    return () => {
      if (opener?.isConnected) opener.focus();
    };
  }, []);

  return (
    <dialog
      ref={dialog}
      class="prompt-confirm"
      aria-labelledby="prompt-confirm-title"
      aria-describedby="prompt-confirm-what"
      onCancel={(event) => {
        event.preventDefault();
        if (!busy) onCancel();
      }}
    >
      <form
        onSubmit={async (event) => {
          event.preventDefault();
          setBusy(true);
          try {
            await onConfirm(reason.trim());
          } finally {
            setBusy(false);
          }
        }}
      >
        <h2 id="prompt-confirm-title">{title}</h2>
        <div id="prompt-confirm-what">{children}</div>
        <label class="prompt-confirm-reason">
          Reason (kept in the history)
          <textarea ref={reasonField} rows={3} maxLength={2000} value={reason} onInput={(event) => setReason((event.target as HTMLTextAreaElement).value)} />
        </label>
        <div class="actions">
          <button type="submit" class={danger ? 'danger' : undefined} disabled={busy}>
            {busy ? 'Working…' : confirmLabel}
          </button>
          <button type="button" class="secondary" disabled={busy} onClick={onCancel}>
            Cancel
          </button>
        </div>
      </form>
    </dialog>
  );
}
