namespace Handoff;

/// <summary>
/// Watches the previous generation from the new one: calls back when it exits, however it
/// exits. Uses a pidfd, which cannot be fooled by a recycled pid; the parent is checked to be
/// the right process after the pidfd is opened (by its start time, since a generation started
/// detached is not the parent's child).
/// </summary>
internal static class ParentWatch
{
    public static void Start(int parentPid, Func<bool> isParent, Action exited)
    {
        int pidfd = Interop.Libc.PidfdOpen(parentPid);
        if (pidfd < 0 || !isParent())
        {
            if (pidfd >= 0)
            {
                Interop.Libc.Close(pidfd);
            }

            exited();
            return;
        }

        var thread = new Thread(() => Wait(pidfd, exited)) { IsBackground = true, Name = $"Handoff parent watch {parentPid}" };
        thread.Start();
    }

    private static unsafe void Wait(int pidfd, Action exited)
    {
        var poll = new Interop.Libc.PollFd { Fd = pidfd, Events = Interop.Libc.POLLIN };
        while (Interop.Libc.Poll(&poll, 1, -1) < 0 && System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == Interop.Libc.EINTR)
        {
        }

        Interop.Libc.Close(pidfd);
        exited();
    }
}
